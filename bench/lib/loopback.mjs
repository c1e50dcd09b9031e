import { createServer } from "node:http";

/**
 * An HTTP server on 127.0.0.1 (a free port) for the benchmarks' fakes; close() also drops
 * the connections still open, so a run always ends.
 */
export async function listenLoopback(handler) {
  const server = createServer(handler);
  const sockets = new Set();
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    server,
    url: `http://127.0.0.1:${server.address().port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(() => r()));
    },
  };
}

/** Base for the benchmarks' fakes: start() listens on loopback and routes to handle(req, res). */
export class LoopbackService {
  async start() {
    this.listening = await listenLoopback((req, res) => this.handle(req, res));
    this.server = this.listening.server;
    this.url = this.listening.url;
    return this.url;
  }

  async close() {
    await this.listening.close();
  }
}

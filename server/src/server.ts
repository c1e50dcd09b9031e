import type { FastifyInstance } from "fastify";
import { buildApp, type AppOptions } from "./app.js";

export interface StartServerOptions extends AppOptions {
  /** Port to listen on; 0 picks a free one. Default 8000. */
  port?: number;
  /** Host to bind. Default 127.0.0.1. */
  host?: string;
}

export interface RunningServer {
  /** Base URL, e.g. `http://127.0.0.1:8000`. */
  url: string;
  port: number;
  app: FastifyInstance;
  /** Admin password generated at this start (when no admin existed and none was given). */
  generatedAdminPassword: string | undefined;
  /** Resolves once the worker has found the queue empty (useful in tests and demos). */
  waitForIdle(): Promise<void>;
  /** Stop accepting, finish in-flight requests, stop the worker, checkpoint and close the database. */
  close(): Promise<void>;
}

/** Start refserver-lite in this process. */
export async function startServer(options: StartServerOptions): Promise<RunningServer> {
  const app = await buildApp(options);
  const host = options.host ?? "127.0.0.1";
  try {
    await app.listen({ port: options.port ?? 8000, host });
  } catch (err) {
    await app.close();
    throw err;
  }
  const address = app.server.address();
  const port = typeof address === "object" && address !== null ? address.port : (options.port ?? 8000);
  const urlHost = host.includes(":") ? `[${host}]` : host;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${urlHost}:${port}`,
    port,
    app,
    generatedAdminPassword: app.refserver.generatedAdminPassword,
    waitForIdle: () => app.refserver.worker?.whenIdle() ?? Promise.resolve(),
    close: () => (closing ??= app.close().then(() => undefined)),
  };
}

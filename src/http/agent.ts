import { Agent } from "./undici.js";
import { VERSION } from "../version.js";

export const USER_AGENT = `import-from-zotero/${VERSION} (+node ${process.version})`;

export interface AgentOptions {
  /** Seconds to wait for an answer's headers, and between body chunks. */
  timeoutSeconds: number;
  connections?: number;
}

/** The one undici Agent per destination: timeouts and connection limits in one place. */
export function makeAgent(options: AgentOptions): Agent {
  const ms = Math.round(options.timeoutSeconds * 1000);
  return new Agent({
    connectTimeout: Math.min(ms, 30_000),
    headersTimeout: ms,
    bodyTimeout: ms,
    connections: options.connections ?? 16,
    keepAliveTimeout: 4_000,
  });
}

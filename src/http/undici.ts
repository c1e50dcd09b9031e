import { createRequire } from "node:module";
import type * as Undici from "undici";
import type { Dispatcher } from "undici";

/**
 * The two parts of undici the importer uses — its Agent and `request` — loaded without
 * undici's index, which also loads fetch, WebSocket, EventSource, the mocks, caches and
 * interceptors (more than half of undici's load time, paid by every run at start-up).
 * undici has no `exports` map, so its files are reachable; should a version move them, the
 * full package is loaded instead (same API, same behaviour).
 */
const require = createRequire(import.meta.url);

type RequestFn = (this: Dispatcher, options: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>;

interface Parts {
  Agent: typeof Undici.Agent;
  request: RequestFn;
  getGlobalDispatcher: () => Dispatcher;
}

function load(): Parts {
  try {
    return {
      Agent: require("undici/lib/dispatcher/agent.js") as typeof Undici.Agent,
      request: require("undici/lib/api/api-request.js") as RequestFn,
      getGlobalDispatcher: (require("undici/lib/global.js") as { getGlobalDispatcher: () => Dispatcher }).getGlobalDispatcher,
    };
  } catch {
    const full = require("undici") as typeof Undici;
    // The index gives every dispatcher its request method.
    return { Agent: full.Agent, request: function (this: Dispatcher, options) { return this.request(options); }, getGlobalDispatcher: full.getGlobalDispatcher };
  }
}

const parts = load();

export const Agent = parts.Agent;
export type Agent = Undici.Agent;

/** What `request` takes: undici.request's options, the URL given apart. */
export type RequestOptions = Omit<Dispatcher.RequestOptions, "origin" | "path" | "method"> & { method?: Dispatcher.HttpMethod; dispatcher?: Dispatcher };

/** undici.request(url, options), as undici's index defines it. */
export function request(url: string, options: RequestOptions): Promise<Dispatcher.ResponseData> {
  const u = new URL(url);
  const { dispatcher = parts.getGlobalDispatcher(), ...rest } = options;
  return parts.request.call(dispatcher, {
    ...rest,
    origin: u.origin,
    path: u.search ? `${u.pathname}${u.search}` : u.pathname,
    method: options.method ?? (options.body ? "PUT" : "GET"),
  });
}

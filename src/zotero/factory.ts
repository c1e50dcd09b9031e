import type { Dispatcher } from "undici";
import type { Config } from "../config/schema.js";
import type { ImportError } from "../errors.js";
import type { RetryPolicy } from "../retry/policy.js";
import type { Clock, Sleep } from "../util/time.js";
import { resolveDataDir, type PlatformInfo } from "./data-dir.js";
import { ZoteroLocalApi } from "./local-api.js";
import { ZoteroLocalSource } from "./local.js";
import type { Collection, ZoteroSource } from "./types.js";
import { ZoteroWebApi } from "./web-api.js";

export interface SourceDeps {
  dispatcher: Dispatcher;
  retry: RetryPolicy;
  sleep: Sleep;
  clock?: Clock;
  onWait?: (info: { reason: string; delayMs: number }) => void;
  onRetry?: (info: { what: string; error: ImportError; attempt: number; delayMs: number }) => void;
  onWarning?: (message: string) => void;
  /** The first SIGINT/SIGTERM: no new listing page, no more retries. */
  stop?: AbortSignal | undefined;
  /** Home, platform and environment for finding Zotero's data directory (source local). Default: this process's. */
  platform?: PlatformInfo;
}

/** A source that can also list collections (for --collection) and count its requests. */
export interface ConfiguredSource extends ZoteroSource {
  listCollections(signal?: AbortSignal): Promise<Collection[]>;
  /** Requests made so far (0 for sources that make none). */
  readonly requests: number;
  /** True when linked files (paths on this computer) can be read, so they are importable. */
  readonly readsLinkedFiles?: boolean;
  /** Release files, snapshots, connections. */
  close?(): Promise<void> | void;
}

/** The one place that turns `zotero.source` into a ZoteroSource. */
export function makeSource(config: Config, deps: SourceDeps): ConfiguredSource {
  switch (config.zotero.source) {
    case "web":
      return new ZoteroWebApi({
        baseUrl: config.zotero.api_url,
        library: { type: config.zotero.library_type, id: config.zotero.library_id },
        apiKey: config.zotero.api_key,
        dispatcher: deps.dispatcher,
        retry: deps.retry,
        sleep: deps.sleep,
        ...(deps.clock ? { clock: deps.clock } : {}),
        ...(deps.onWait ? { onWait: deps.onWait } : {}),
        ...(deps.onRetry ? { onRetry: deps.onRetry } : {}),
        ...(deps.onWarning ? { onWarning: deps.onWarning } : {}),
        stop: deps.stop,
      });
    case "local": {
      // The data directory (configured, else the profile's, else ~/Zotero) and the base
      // directory of `attachments:` linked files from the profile's prefs.js.
      const found = resolveDataDir(config.zotero.data_dir, deps.platform);
      return new ZoteroLocalSource({
        dataDir: found.dataDir,
        library: { type: config.zotero.library_type, id: config.zotero.library_id },
        baseAttachmentPath: found.baseAttachmentPath,
        ...(deps.platform?.env.TMPDIR ? { tmpDir: deps.platform.env.TMPDIR } : {}),
      });
    }
    case "local-api":
      return new ZoteroLocalApi({
        baseUrl: config.zotero.api_url,
        // Zotero's local API calls the logged-in user 0; groups go by their group ID.
        library: config.zotero.library_type === "group" ? { type: "group", id: config.zotero.library_id } : { type: "user", id: "0" },
        dispatcher: deps.dispatcher,
        retry: deps.retry,
        sleep: deps.sleep,
        ...(deps.clock ? { clock: deps.clock } : {}),
        ...(deps.onWait ? { onWait: deps.onWait } : {}),
        ...(deps.onRetry ? { onRetry: deps.onRetry } : {}),
        ...(deps.onWarning ? { onWarning: deps.onWarning } : {}),
        stop: deps.stop,
      });
  }
}

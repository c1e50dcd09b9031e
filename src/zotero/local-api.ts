/**
 * Zotero 7's local API (http://127.0.0.1:23119/api/, user ID 0, no key): the same JSON as
 * the Web API, so listings go through ZoteroWebApi. Only files differ: `/items/KEY/file`
 * answers a redirect to a `file://` URL, which fetch cannot follow; we read that path.
 */
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { Dispatcher } from "undici";
import { ImportError, messageOf } from "../errors.js";
import { statusError } from "../failure/policy.js";
import { classifyNetworkError } from "../retry/classify.js";
import type { RetryPolicy } from "../retry/policy.js";
import type { Clock, Sleep } from "../util/time.js";
import type { Attachment, Collection, FileBody, GoneKeys, LibraryRef, Listing, ListOptions, ZoteroSource } from "./types.js";
import { ZoteroWebApi } from "./web-api.js";

const DEFAULT_LOCAL_API_URL = "http://127.0.0.1:23119/api";

export interface LocalApiOptions {
  /** Default http://127.0.0.1:23119/api. */
  baseUrl?: string;
  /** The user library is user 0; a group by its group ID. */
  library?: LibraryRef;
  dispatcher?: Dispatcher | undefined;
  retry: RetryPolicy;
  sleep?: Sleep;
  clock?: Clock;
  onWait?: (info: { reason: string; delayMs: number }) => void;
  onRetry?: (info: { what: string; error: ImportError; attempt: number; delayMs: number }) => void;
  onWarning?: (message: string) => void;
  stop?: AbortSignal | undefined;
}

export class ZoteroLocalApi implements ZoteroSource {
  /** The local API points linked files at this computer's paths, which we can read: importable. */
  readonly readsLinkedFiles = true;
  readonly library: LibraryRef;
  private readonly api: ZoteroWebApi;
  private readonly base: string;
  private fileRequests = 0;

  constructor(private readonly options: LocalApiOptions) {
    const baseUrl = (options.baseUrl ?? DEFAULT_LOCAL_API_URL).replace(/\/+$/, "");
    this.library = options.library ?? { type: "user", id: "0" };
    this.base = `${baseUrl}/${this.library.type === "group" ? "groups" : "users"}/${this.library.id}`;
    this.api = new ZoteroWebApi({
      baseUrl,
      library: this.library,
      apiKey: "",
      dispatcher: options.dispatcher,
      retry: options.retry,
      ...(options.sleep ? { sleep: options.sleep } : {}),
      ...(options.clock ? { clock: options.clock } : {}),
      ...(options.onWait ? { onWait: options.onWait } : {}),
      ...(options.onRetry ? { onRetry: options.onRetry } : {}),
      ...(options.onWarning ? { onWarning: options.onWarning } : {}),
      stop: options.stop,
      // The local API may leave links.enclosure out for a file that is on disk: only ask.
      fileEvidence: "local-api",
    });
  }

  get requests(): number {
    return this.api.requests + this.fileRequests;
  }

  /** Zotero answers 403 "Local API is not enabled" rather than an auth failure. */
  private explain(error: unknown): never {
    if (error instanceof ImportError && error.code === "ZOTERO_AUTH") {
      throw new ImportError(
        "ZOTERO_AUTH",
        `Zotero's local API refused the request (${error.status ?? 403}): enable it in Zotero → Settings → Advanced → "Allow other applications on this computer to communicate with Zotero"`,
        { status: error.status ?? 403 },
      );
    }
    if (error instanceof ImportError && error.connection) {
      throw new ImportError("NETWORK", `Zotero's local API at ${this.options.baseUrl ?? DEFAULT_LOCAL_API_URL} is not answering: is Zotero 7 running? (${error.message})`, {
        retriable: true,
        connection: true,
        cause: error,
      });
    }
    throw error;
  }

  async list(options: ListOptions = {}): Promise<Listing> {
    return this.api.list(options).catch((e: unknown) => this.explain(e));
  }

  async goneKeys(keys: readonly string[], signal?: AbortSignal): Promise<GoneKeys> {
    return this.api.goneKeys(keys, signal).catch((e: unknown) => this.explain(e));
  }

  async listCollections(signal?: AbortSignal): Promise<Collection[]> {
    return this.api.listCollections(signal).catch((e: unknown) => this.explain(e));
  }

  async openFile(attachment: Attachment, signal?: AbortSignal): Promise<FileBody> {
    const url = `${this.base}/items/${encodeURIComponent(attachment.key)}/file`;
    // One attempt; the download retries the whole open (see ZoteroWebApi.openFile).
    const location = await (async (): Promise<string> => {
      await this.api.gate.wait(signal);
      this.fileRequests++;
      let response: Response;
      try {
        response = await fetch(url, {
          headers: { "Zotero-API-Version": "3" },
          redirect: "manual",
          ...(signal ? { signal } : {}),
          ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher as unknown as RequestInit["dispatcher"] } : {}),
        });
      } catch (error) {
        throw classifyNetworkError(error, `Zotero local API file of ${attachment.key} (${url})`);
      }
      await response.body?.cancel().catch(() => undefined);
      if (response.status >= 300 && response.status < 400) {
        const target = response.headers.get("location");
        if (!target) throw new ImportError("ZOTERO_BAD_DATA", `Zotero local API file of ${attachment.key}: a redirect without a Location`);
        return target;
      }
      if (response.status === 404 || response.status === 400) {
        throw new ImportError("ZOTERO_FILE_MISSING", `file of ${attachment.key} not found: Zotero's local API answered ${response.status}`, { status: response.status });
      }
      throw statusError("zotero-file", response.status, `Zotero local API file of ${attachment.key}: answer ${response.status}`);
    })().catch((e: unknown) => this.explain(e));

    if (!location.startsWith("file:")) {
      // Not what Zotero does, but a plain HTTP redirect is the Web API's way: let that client follow it.
      return this.api.openFile(attachment, signal);
    }
    let path: string;
    try {
      path = fileURLToPath(location);
    } catch (error) {
      throw new ImportError("ZOTERO_BAD_DATA", `Zotero local API file of ${attachment.key}: unusable file URL (${messageOf(error)})`);
    }
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") {
        throw new ImportError("ZOTERO_FILE_MISSING", `file of ${attachment.key} not on this computer: ${path} (not downloaded by Zotero yet?)`);
      }
      throw new ImportError("FILE_IO", `cannot read ${path}: ${code ?? messageOf(error)}`, { cause: error });
    }
    return { body: createReadStream(path), size };
  }
}

import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, mkdirSync, rmSync, statSync } from "node:fs";
import { open, rename } from "node:fs/promises";
import { join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { ImportError } from "../errors.js";
import { withRetry, type RetryPolicy } from "../retry/policy.js";
import type { Sleep } from "../util/time.js";
import type { Attachment, ZoteroSource } from "../zotero/types.js";

export interface DownloadOptions {
  source: ZoteroSource;
  attachment: Attachment;
  cacheDir: string;
  useCache: boolean;
  retry: RetryPolicy;
  sleep: Sleep;
  signal?: AbortSignal | undefined;
  /** Stop retrying (the first SIGINT/SIGTERM): the attempt in flight finishes. */
  stop?: AbortSignal | undefined;
  onBytes?: (bytes: number) => void;
  onRetry?: (info: { error: ImportError; attempt: number; delayMs: number }) => void;
}

export interface Downloaded {
  path: string;
  size: number;
  md5: string;
  fromCache: boolean;
}

/** The cache file's write buffer: the download's 16–64 KiB chunks go out in fewer, larger writes. */
const WRITE_CHUNK = 1024 * 1024;

export function cachePathFor(cacheDir: string, attachment: Attachment): string {
  return join(cacheDir, `${attachment.key}.pdf`);
}

async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function md5File(path: string): Promise<string> {
  const hash = createHash("md5");
  await pipeline(createReadStream(path), hash);
  return hash.digest("hex");
}

/** Cache directories already made in this process (one mkdir per run, not per paper). */
const madeDirs = new Set<string>();

/**
 * Stream an attachment to `<cache>/<key>.pdf.partial`, verify its MD5 against Zotero's,
 * fsync, then rename: a file in the cache under its final name is always whole.
 */
export async function downloadAttachment(options: DownloadOptions): Promise<Downloaded> {
  const { attachment, cacheDir } = options;
  if (!madeDirs.has(cacheDir)) {
    mkdirSync(cacheDir, { recursive: true });
    madeDirs.add(cacheDir);
  }
  const finalPath = cachePathFor(cacheDir, attachment);

  if (options.useCache && existsSync(finalPath)) {
    const md5 = await md5File(finalPath);
    if (!attachment.md5 || md5 === attachment.md5) {
      return { path: finalPath, size: statSync(finalPath).size, md5, fromCache: true };
    }
    rmSync(finalPath, { force: true });
  }

  const partial = `${finalPath}.partial`;
  const result = await withRetry(
    async () => {
      const file = await options.source.openFile(attachment, options.signal);
      const hash = createHash("md5");
      let size = 0;
      // The first KiB, kept to check for the PDF header without reading the file again.
      const head: Buffer[] = [];
      const meter = new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          if (size < 1024) head.push(chunk.subarray(0, 1024 - size));
          size += chunk.length;
          options.onBytes?.(chunk.length);
          done(null, chunk);
        },
      });
      try {
        await pipeline(file.body, meter, createWriteStream(partial, { mode: 0o600, highWaterMark: WRITE_CHUNK }), options.signal ? { signal: options.signal } : {});
      } catch (error) {
        rmSync(partial, { force: true });
        if (options.signal?.aborted) throw new ImportError("INTERRUPTED", "download interrupted", { cause: error });
        const code = (error as NodeJS.ErrnoException).code;
        // Our own disk (the cache) is not the network: say which file and why.
        if (code === "ENOSPC" || code === "EDQUOT" || code === "EACCES" || code === "EROFS" || code === "EIO") {
          throw new ImportError("FILE_IO", `cannot write the download cache ${partial} (${code}): free some space or set paths.cache_dir elsewhere`, { cause: error });
        }
        throw new ImportError("ZOTERO_STORAGE", `download of ${attachment.key} broke off: ${(error as Error).message}`, { retriable: true, cause: error });
      }
      // A body shorter than announced is a broken transfer, whatever the stream said.
      if (file.size !== null && size !== file.size) {
        rmSync(partial, { force: true });
        throw new ImportError("ZOTERO_STORAGE", `download of ${attachment.key} ended after ${size} of ${file.size} bytes`, { retriable: true });
      }
      const md5 = hash.digest("hex");
      if (attachment.md5 && md5 !== attachment.md5) {
        rmSync(partial, { force: true });
        throw new ImportError("DOWNLOAD_MD5_MISMATCH", `downloaded file of ${attachment.key} has MD5 ${md5}, Zotero says ${attachment.md5}`, { retriable: true });
      }
      return { md5, size, pdf: Buffer.concat(head).includes("%PDF-") };
    },
    options.retry,
    { sleep: options.sleep, signal: options.signal, stop: options.stop, ...(options.onRetry ? { onRetry: options.onRetry } : {}) },
  );

  // Without an MD5 to check a cached file against on reuse, make it durable before the
  // rename; with one, a file torn by a crash is caught (and fetched again) on reuse.
  if (!attachment.md5) await fsyncFile(partial);
  if (!result.pdf) {
    rmSync(partial, { force: true });
    throw new ImportError("ZOTERO_BAD_DATA", `the stored file of ${attachment.key} is not a PDF (no %PDF- header)`);
  }
  await rename(partial, finalPath);
  return { path: finalPath, size: result.size, md5: result.md5, fromCache: false };
}

/**
 * The PDF thread (a worker_threads Worker started by PdfExtractor). It reads one document at a
 * time: page text within the limits, and its chunks. It never opens the database: the main thread
 * claims jobs and writes results.
 */
import { parentPort } from "node:worker_threads";
import type { ChunkInput } from "../db/types.js";
import { chunkPages } from "./chunk.js";
import { extractDocument, PdfReadError, type ExtractedDocument, type TextLimits } from "./pdf.js";

export type ThreadRequest =
  | { id: number; kind: "extract"; path: string; limits: TextLimits }
  | { id: number; kind: "chunk"; pages: string[] };

export type ThreadReply =
  | { id: number; ok: true; kind: "extract"; result: ExtractedDocument }
  | { id: number; ok: true; kind: "chunk"; chunks: ChunkInput[] }
  | { id: number; ok: false; readError: boolean; message: string };

const port = parentPort;
if (!port) throw new Error("pdf-thread.js runs as a worker thread (started by PdfExtractor)");

port.on("message", (request: ThreadRequest) => {
  void handle(request).then((reply) => port.postMessage(reply));
});

async function handle(request: ThreadRequest): Promise<ThreadReply> {
  try {
    if (request.kind === "chunk") return { id: request.id, ok: true, kind: "chunk", chunks: chunkPages(request.pages) };
    const result = await extractDocument(request.path, request.limits);
    return { id: request.id, ok: true, kind: "extract", result };
  } catch (err) {
    const readError = err instanceof PdfReadError;
    const message = err instanceof Error ? err.message : String(err);
    return { id: request.id, ok: false, readError, message };
  }
}

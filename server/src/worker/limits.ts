/** What one PDF may cost the server. Every limit applies per document. */
export interface PdfLimits {
  /** Wall time for a document's text and chunks, from the thread's start of work. Default 60 s. */
  timeLimitMs: number;
  /**
   * Bytes any one stream may decode to while text is read (a page's content streams, read by
   * pdfjs as one, a form XObject, an embedded font, an object stream). Default 20 MB.
   */
  maxDecodedBytes: number;
  /** Bytes (UTF-8) of page text stored for a document; text beyond is cut at the limit. Default 5 MB. */
  maxTextBytes: number;
  /** V8 heap (old generation) of the PDF thread, in MB. Default 256. */
  memoryMb: number;
}

export const MB = 1024 * 1024;

export const DEFAULT_PDF_LIMITS: Readonly<PdfLimits> = Object.freeze({
  timeLimitMs: 60_000,
  maxDecodedBytes: 20 * MB,
  maxTextBytes: 5 * MB,
  memoryMb: 256,
});

/** The defaults with the given values over them; rejects values that are not positive numbers. */
export function resolvePdfLimits(overrides: Partial<PdfLimits> = {}): PdfLimits {
  const limits: PdfLimits = { ...DEFAULT_PDF_LIMITS };
  for (const key of Object.keys(limits) as Array<keyof PdfLimits>) {
    const v = overrides[key];
    if (v === undefined) continue;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw new RangeError(`PDF limit ${key} must be a positive number, got ${String(v)}`);
    limits[key] = v;
  }
  return limits;
}

/** "5 MB", "1.5 MB", "800 KB", "300 bytes" (MB = 1024 × 1024 bytes, as for the upload limit). */
export function formatBytes(n: number): string {
  if (n >= MB) return `${trimNumber(n / MB)} MB`;
  if (n >= 1024) return `${trimNumber(n / 1024)} KB`;
  return `${n} bytes`;
}

/** "60 s", "0.2 s". */
export function formatSeconds(ms: number): string {
  return `${trimNumber(ms / 1000)} s`;
}

function trimNumber(x: number): string {
  return String(Math.round(x * 100) / 100);
}

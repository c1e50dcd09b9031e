/**
 * The dry-run preview: a table of what an import would do, fitted to the terminal,
 * and the totals printed under it. Pure functions: rows and counts in, text out.
 *
 * Columns are measured in display columns (string-width), not UTF-16 code units, so
 * CJK (double width), Arabic, combining marks and emoji (including ZWJ sequences)
 * line up; truncation works on whole grapheme clusters.
 */
import stringWidth from "string-width";
import { formatBytes } from "../progress/format.js";

export interface PreviewRow {
  key: string;
  title: string;
  authors: string;
  year: number | null;
  pdf: string | null;
  size: number | null;
  action: "import" | "already done" | "skip" | "later (--limit)";
  reason?: string;
  /** The item has a PDF attachment whose file is not in Zotero storage. */
  unsynced?: boolean;
}

export interface PreviewOptions {
  /** The terminal's columns; DEFAULT_PREVIEW_WIDTH when unknown. */
  width?: number | undefined;
  /** List the rows beyond --limit instead of summing them up in one line (--verbose). */
  showLater?: boolean | undefined;
}

export interface PreviewCounts {
  import: number;
  alreadyDone: number;
  /** Skip reason text (e.g. "no attachment") → how many items. */
  skippedByReason: Record<string, number>;
  laterByLimit: number;
  /** The size of each PDF that would be imported; null when the source does not tell. */
  importSizes: (number | null)[];
  /** False when the server cannot tell which papers it holds. */
  serverKnown: boolean;
}

const DEFAULT_PREVIEW_WIDTH = 160;

export const UNSYNCED_NOTE = "PDF not synced to Zotero storage";
export const UNSYNCED_ALSO_NOTE = "(a PDF not synced)";
const LATER: PreviewRow["action"] = "later (--limit)";
const SEP = "  ";
const ELLIPSIS = "…";

type ColumnId = "action" | "key" | "year" | "title" | "authors" | "pdf" | "size" | "note";
type Shrinkable = "title" | "authors" | "pdf" | "note";

/** Who gives up space first when the table is too wide. */
const SHRINK_ORDER: readonly Shrinkable[] = ["title", "authors", "pdf", "note"];
/**
 * How far, in two rounds: first down to a comfortable width each (so a long NOTE does not
 * squeeze TITLE to nothing), then, if still too wide, down to the hard minimums.
 */
const SHRINK_ROUNDS: readonly Record<Shrinkable, number>[] = [
  { title: 24, authors: 12, pdf: 12, note: 16 },
  { title: 12, authors: 8, pdf: 8, note: 10 },
];
/** When even the minimums do not fit: columns left out, in this order. */
const DROP_ORDER: readonly ColumnId[] = ["authors", "pdf"];

interface Column {
  id: ColumnId;
  header: string;
  cells: string[];
  /** Display width of each cell, measured once. */
  cellWidths: number[];
  align: "left" | "right";
}

const graphemes = new Intl.Segmenter(undefined, { granularity: "grapheme" });

/**
 * One line of plain text fit for a table cell: whitespace (newlines, tabs) collapsed,
 * control characters (ESC, so no terminal escape sequences) and bidi overrides removed,
 * so neither the terminal nor the rest of the line is disturbed.
 */
function cleanCell(text: string): string {
  return text
    .replace(/[\u202A-\u202E\u2066-\u2069]/g, "")
    .replace(/[\u0000-\u001F\u007F-\u009F]/g, " ")
    .replace(/\s+/g, " ")
    .trim();
}

/**
 * At most `width` display columns of `text`, cut between grapheme clusters and ending
 * in "…" when cut: never half a surrogate pair, a wide character, an emoji ZWJ sequence
 * or a letter without its combining marks. The result can be one column narrower than
 * `width` when a wide character did not fit.
 */
export function truncateToWidth(text: string, width: number): string {
  const max = Math.max(0, Math.floor(width));
  if (stringWidth(text) <= max) return text;
  if (max === 0) return "";
  const budget = max - stringWidth(ELLIPSIS);
  let out = "";
  let used = 0;
  for (const { segment } of graphemes.segment(text)) {
    const w = stringWidth(segment);
    if (used + w > budget) break;
    out += segment;
    used += w;
  }
  return `${out.trimEnd()}${ELLIPSIS}`;
}

/** `text` padded with spaces to `width` display columns (never cut). */
export function padToWidth(text: string, width: number, align: "left" | "right" = "left"): string {
  const fill = " ".repeat(Math.max(0, width - stringWidth(text)));
  return align === "left" ? text + fill : fill + text;
}

/** Greedy word wrap by display width; continuation lines start with `indent`. Words wider than a line stay whole. */
function wrap(text: string, width: number, indent = ""): string[] {
  if (stringWidth(text) <= width) return [text];
  const lines: string[] = [];
  let line: string | null = null;
  for (const word of text.split(" ")) {
    if (line === null) line = word;
    else if (stringWidth(`${line} ${word}`) <= width) line = `${line} ${word}`;
    else {
      lines.push(line);
      line = `${indent}${word}`;
    }
  }
  if (line !== null) lines.push(line);
  return lines;
}

function normaliseWidth(width: number | undefined): number {
  return width !== undefined && Number.isFinite(width) && width > 0 ? Math.floor(width) : DEFAULT_PREVIEW_WIDTH;
}

function noteOf(r: PreviewRow): string {
  if (r.action === "skip") return r.reason ?? (r.unsynced ? UNSYNCED_NOTE : "");
  const base = r.reason ?? (r.action === LATER ? "beyond --limit" : "");
  return [base, r.unsynced ? UNSYNCED_ALSO_NOTE : ""].filter(Boolean).join(" ");
}

function sizeOf(r: PreviewRow): string {
  if (r.size !== null) return formatBytes(r.size);
  // An import whose size the source does not tell: say so rather than leave a hole.
  return (r.action === "import" || r.action === LATER) && r.pdf !== null ? "?" : "";
}

function column(id: ColumnId, header: string, cells: string[], align: "left" | "right" = "left"): Column {
  return { id, header, cells, cellWidths: cells.map((c) => stringWidth(c)), align };
}

function buildColumns(rows: PreviewRow[], withSize: boolean): Column[] {
  const columns = [
    column("action", "ACTION", rows.map((r) => (r.action === "already done" ? "done" : r.action === LATER ? "later" : r.action))),
    column("key", "KEY", rows.map((r) => cleanCell(r.key))),
    column("year", "YEAR", rows.map((r) => (r.year === null ? "" : String(r.year)))),
    column("title", "TITLE", rows.map((r) => cleanCell(r.title) || "(untitled)")),
    column("authors", "AUTHORS", rows.map((r) => cleanCell(r.authors))),
    column("pdf", "PDF", rows.map((r) => cleanCell(r.pdf ?? ""))),
  ];
  if (withSize) columns.push(column("size", "SIZE", rows.map(sizeOf), "right"));
  columns.push(column("note", "NOTE", rows.map((r) => cleanCell(noteOf(r)))));
  return columns;
}

function isShrinkable(id: ColumnId): id is Shrinkable {
  return (SHRINK_ORDER as readonly ColumnId[]).includes(id);
}

/** Column widths for `width`: natural widths, then TITLE, AUTHORS, PDF, NOTE shrunk in that order, round by round. */
function fit(columns: Column[], width: number): { widths: number[]; fits: boolean } {
  const widths = columns.map((c) => c.cellWidths.reduce((a, b) => Math.max(a, b), stringWidth(c.header)));
  const total = (): number => widths.reduce((a, b) => a + b, 0) + SEP.length * (columns.length - 1);
  for (const minimum of SHRINK_ROUNDS) {
    for (const id of SHRINK_ORDER) {
      const excess = total() - width;
      if (excess <= 0) break;
      const i = columns.findIndex((c) => c.id === id);
      const col = columns[i];
      if (!col || !isShrinkable(col.id)) continue;
      const floor = Math.min(widths[i]!, Math.max(minimum[col.id], stringWidth(col.header)));
      widths[i] = widths[i]! - Math.min(excess, widths[i]! - floor);
    }
  }
  return { widths, fits: total() <= width };
}

/**
 * The dry-run table: ACTION, KEY, YEAR, TITLE, AUTHORS, PDF, SIZE (when any size is
 * known), NOTE; no line wider than `width` display columns unless even the minimum
 * column widths do not fit. Rows beyond --limit are summed up in one line unless
 * `showLater`.
 */
export function formatPreview(rows: PreviewRow[], options: PreviewOptions = {}): string {
  const width = normaliseWidth(options.width);
  const showLater = options.showLater ?? false;
  const later = rows.filter((r) => r.action === LATER).length;
  const shown = showLater ? rows : rows.filter((r) => r.action !== LATER);
  let columns = buildColumns(shown, shown.some((r) => r.size !== null));
  let fitted = fit(columns, width);
  for (const drop of DROP_ORDER) {
    if (fitted.fits) break;
    columns = columns.filter((c) => c.id !== drop);
    fitted = fit(columns, width);
  }
  const { widths } = fitted;
  const last = columns.length - 1;
  const render = (cells: string[], cellWidths: number[]): string =>
    cells
      .map((text, i) => {
        const w = widths[i]!;
        const cut = cellWidths[i]! > w ? truncateToWidth(text, w) : text;
        return i === last ? cut : padToWidth(cut, w, columns[i]!.align);
      })
      .join(SEP)
      .trimEnd();
  const lines = [render(columns.map((c) => c.header), columns.map((c) => stringWidth(c.header)))];
  for (let r = 0; r < shown.length; r++) {
    lines.push(render(columns.map((c) => c.cells[r]!), columns.map((c) => c.cellWidths[r]!)));
  }
  if (!showLater && later > 0) {
    lines.push(...wrap(`… and ${later} more to import in later runs (beyond --limit; --verbose lists them)`, width, "  "));
  }
  return lines.join("\n");
}

/**
 * The total size of what would be imported: "43.1 MB"; "≥ 43.1 MB, 4 unknown" when the
 * source does not tell some sizes; "unknown size" when it tells none.
 */
export function sizeTotal(sizes: (number | null)[]): string {
  let sum = 0;
  let unknown = 0;
  for (const s of sizes) {
    if (s === null || !Number.isFinite(s) || s < 0) unknown++;
    else sum += s;
  }
  if (unknown === 0) return formatBytes(sum);
  if (unknown === sizes.length) return "unknown size";
  return `≥ ${formatBytes(sum)}, ${unknown} unknown`;
}

/**
 * The lines under the table: what the dry run would do with the total size, the skips
 * per reason (most frequent first), and a warning when the server cannot tell which
 * papers it holds. Wrapped to `width` display columns (DEFAULT_PREVIEW_WIDTH when unknown).
 */
export function formatPreviewTotals(counts: PreviewCounts, options: { width?: number | undefined } = {}): string {
  const reasons = Object.entries(counts.skippedByReason)
    .filter(([, n]) => n > 0)
    .sort(([a, n], [b, m]) => m - n || (a < b ? -1 : a > b ? 1 : 0));
  const skipped = reasons.reduce((sum, [, n]) => sum + n, 0);
  const size = counts.import > 0 ? ` (${sizeTotal(counts.importSizes)})` : "";
  const later = counts.laterByLimit > 0 ? `, leave ${counts.laterByLimit} for later (--limit)` : "";
  const lines = [
    `Dry run: would import ${counts.import}${size}, already done ${counts.alreadyDone}, skip ${skipped}${later}. Nothing was downloaded, uploaded or recorded.`,
  ];
  if (reasons.length > 0) lines.push(`skip: ${reasons.map(([reason, n]) => `${cleanCell(reason)} ${n}`).join(", ")}`);
  if (!counts.serverKnown) {
    lines.push("The server cannot tell which papers it holds: 'already done' counts only this computer's checkpoint.");
  }
  // Like the table: DEFAULT_PREVIEW_WIDTH when the width is unknown (stdout is a pipe).
  const width = normaliseWidth(options.width);
  return lines.flatMap((l) => wrap(l, width, "  ")).join("\n");
}

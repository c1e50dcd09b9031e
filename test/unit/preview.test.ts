import stringWidth from "string-width";
import { describe, expect, it } from "vitest";
import {
  formatPreview,
  formatPreviewTotals,
  padToWidth,
  sizeTotal,
  truncateToWidth,
  UNSYNCED_ALSO_NOTE,
  UNSYNCED_NOTE,
  type PreviewCounts,
  type PreviewRow,
} from "../../src/cli/preview.js";

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const row = (over: Partial<PreviewRow> & Pick<PreviewRow, "key" | "title">): PreviewRow => ({
  authors: "Doe, Smith",
  year: 2020,
  pdf: `${over.key}.pdf`,
  size: 1_234_567,
  action: "import",
  ...over,
});

/** Every row has a NOTE, so every line shows where the NOTE column starts. */
const international: PreviewRow[] = [
  row({ key: "ASCII001", title: "A plain English title about reference managers", reason: "in checkpoint" }),
  row({ key: "CJK00001", title: "深層学習による自然言語処理の新しい手法", authors: "山田 太郎, 佐藤 花子", pdf: "深層学習.pdf", reason: "on server", action: "already done" }),
  row({ key: "ARABIC01", title: "تحليل البيانات الضخمة باستخدام التعلم الآلي", authors: "مُحَمَّد أحمد", pdf: "تحليل.pdf", unsynced: true }),
  row({ key: "EMOJI001", title: "Coding 👩‍💻 with family 👨‍👩‍👧‍👦 in 🇯🇵 😀", authors: "Zoë Ñúñez", pdf: "emoji.pdf", size: null, action: "skip", reason: "no attachment" }),
  row({ key: "COMBIN01", title: "Cafe\u0301 nai\u0308ve re\u0301sume\u0301 cre\u0300me bru\u0302le\u0301e", authors: "Ame\u0301lie", pdf: "cafe.pdf", reason: "on server", action: "already done" }),
  row({ key: "MIXED001", title: "混合 mixed ✨ عربي text", pdf: "mixed.pdf", action: "later (--limit)" }),
];

/** Display column where `needle` starts in `line` (its last occurrence). */
function columnOf(line: string, needle: string): number {
  const at = line.lastIndexOf(needle);
  expect(at, `"${needle}" in "${line}"`).toBeGreaterThanOrEqual(0);
  return stringWidth(line.slice(0, at));
}

function tableLines(text: string): string[] {
  return text.split("\n").filter((l) => !l.startsWith("…") && !l.startsWith("  "));
}

describe("formatPreview alignment", () => {
  it("lines up CJK, Arabic, combining marks and emoji (ZWJ) rows by display width", () => {
    const out = formatPreview(international, { width: 200, showLater: true });
    const [header, ...body] = tableLines(out);
    expect(body).toHaveLength(international.length);
    const noteAt = columnOf(header!, "NOTE");
    const pdfAt = columnOf(header!, "PDF");
    const notes = ["in checkpoint", "on server", UNSYNCED_ALSO_NOTE, "no attachment", "on server", "beyond --limit"];
    body.forEach((line, i) => {
      expect(columnOf(line, notes[i]!)).toBe(noteAt);
      expect(columnOf(line, international[i]!.pdf!)).toBe(pdfAt);
      // Nothing cut at 200 columns.
      expect(line).toContain(international[i]!.title);
      expect(line.endsWith(notes[i]!)).toBe(true);
    });
    // Code-unit padding would misplace the wide and the zero-width rows: make sure they are really in the table.
    expect(stringWidth("深層学習による自然言語処理の新しい手法")).toBeGreaterThan("深層学習による自然言語処理の新しい手法".length);
    expect(stringWidth(international[3]!.title)).toBeLessThan(international[3]!.title.length);
  });

  it("keeps alignment when the wide titles are truncated", () => {
    const long = international.map((r) => ({ ...r, title: r.title.repeat(4) }));
    const out = formatPreview(long, { width: 120, showLater: true });
    const [header, ...body] = tableLines(out);
    const noteAt = columnOf(header!, "NOTE");
    const notes = ["in checkpoint", "on server", UNSYNCED_ALSO_NOTE, "no attachment", "on server", "beyond --limit"];
    body.forEach((line, i) => {
      expect(columnOf(line, notes[i]!)).toBe(noteAt);
      expect(line).toContain("…");
      expect(line).not.toMatch(LONE_SURROGATE);
    });
  });

  it("right-aligns SIZE and leaves it out when no size is known", () => {
    const out = formatPreview(international, { width: 200 }).split("\n");
    const sizeEnd = columnOf(out[0]!, "SIZE") + "SIZE".length;
    expect(columnOf(out[1]!, "1.2 MB") + "1.2 MB".length).toBe(sizeEnd);
    const none = formatPreview(
      international.map((r) => ({ ...r, size: null })),
      { width: 200 },
    );
    expect(none.split("\n")[0]).not.toContain("SIZE");
  });

  it("marks unknown sizes of imports with ?", () => {
    const out = formatPreview([row({ key: "KNOWN001", title: "Known" }), row({ key: "UNKNOWN1", title: "Unknown", size: null })], { width: 200 });
    const [header, , unknown] = out.split("\n");
    expect(columnOf(unknown!, "?") + 1).toBe(columnOf(header!, "SIZE") + "SIZE".length);
  });
});

describe("formatPreview fits the terminal", () => {
  const long: PreviewRow[] = [
    ...international.map((r) => ({ ...r, title: r.title.repeat(5), authors: `${r.authors}, ${r.authors}, ${r.authors} et al.` })),
    row({ key: "LINKED01", title: "Linked file paper", action: "skip", size: null, reason: "PDF is a linked file (not in Zotero storage)" }),
    row({ key: "LONGPDF1", title: "A long file name", pdf: `${"very-long-file-name-".repeat(6)}.pdf` }),
  ];

  it.each([60, 100, 200])("no line wider than %i columns", (width) => {
    for (const showLater of [false, true]) {
      const lines = formatPreview(long, { width, showLater }).split("\n");
      expect(lines.length).toBeGreaterThan(long.length - 2);
      for (const line of lines) expect(stringWidth(line), line).toBeLessThanOrEqual(width);
      expect(lines[0]).toMatch(/^ACTION +KEY +YEAR +TITLE /);
      expect(lines[0]).toMatch(/NOTE$/);
    }
  });

  it("shrinks TITLE first, then AUTHORS, then PDF", () => {
    const rows = [row({ key: "ORDER001", title: "T".repeat(80), authors: "A".repeat(40), pdf: `${"P".repeat(40)}.pdf`, reason: "note" })];
    const natural = Math.max(...formatPreview(rows, { width: 1000 }).split("\n").map((l) => stringWidth(l)));
    const cells = (width: number): { title: number; authors: number; pdf: number } => {
      const line = formatPreview(rows, { width }).split("\n")[1]!;
      expect(stringWidth(line)).toBeLessThanOrEqual(width);
      return {
        title: (line.match(/T+…?/)?.[0] ?? "").length,
        authors: (line.match(/A+…?/)?.[0] ?? "").length,
        pdf: (line.match(/P+(\.pdf|…)?/)?.[0] ?? "").length,
      };
    };
    expect(cells(natural)).toEqual({ title: 80, authors: 40, pdf: 44 });
    // A little too narrow: only TITLE gives.
    expect(cells(natural - 10)).toEqual({ title: 70, authors: 40, pdf: 44 });
    // TITLE at its comfortable width, then AUTHORS gives.
    const c = cells(natural - 66);
    expect(c.pdf).toBe(44);
    expect(c.authors).toBeLessThan(40);
    expect(c.title).toBeLessThan(70);
    // Narrower still: PDF gives too.
    expect(cells(natural - 90).pdf).toBeLessThan(44);
  });

  it("uses 160 columns when the width is unknown", () => {
    const rows = [row({ key: "WIDE0001", title: "W".repeat(300), reason: "on server", action: "already done" })];
    const lines = formatPreview(rows).split("\n");
    expect(stringWidth(lines[1]!)).toBe(160);
    expect(stringWidth(lines[0]!)).toBeLessThanOrEqual(160);
    expect(lines[1]).toMatch(/W…  Doe, Smith  /);
    expect(formatPreview(rows, { width: Number.NaN })).toBe(formatPreview(rows, {}));
  });

  it("keeps control characters and escape sequences out of the table", () => {
    const out = formatPreview([row({ key: "CTRL0001", title: "Evil\u001b[31m red\u202Ereversed\nnext line\ttab", reason: "x" })], { width: 200 });
    expect(out.split("\n")).toHaveLength(2);
    for (const line of out.split("\n")) expect(line).not.toMatch(/[\u0000-\u001F\u007F-\u009F\u202E]/);
    expect(out).toContain("Evil [31m redreversed next line tab");
  });
});

describe("truncateToWidth and padToWidth", () => {
  it("ends in … and respects display width", () => {
    expect(truncateToWidth("Hello world", 20)).toBe("Hello world");
    expect(truncateToWidth("Hello world", 6)).toBe("Hello…");
    expect(truncateToWidth("Hello world", 1)).toBe("…");
    expect(truncateToWidth("Hello world", 0)).toBe("");
  });

  it("never leaves half a wide character", () => {
    expect(truncateToWidth("日本語のタイトル", 4)).toBe("日…");
    expect(truncateToWidth("日本語のタイトル", 5)).toBe("日本…");
    expect(stringWidth(padToWidth(truncateToWidth("日本語のタイトル", 4), 4))).toBe(4);
    for (let w = 1; w <= 16; w++) {
      const cut = truncateToWidth("深層学習による自然言語処理", w);
      expect(stringWidth(cut)).toBeLessThanOrEqual(w);
      expect(stringWidth(cut)).toBeGreaterThanOrEqual(w - 1);
      expect(cut.endsWith("…")).toBe(true);
    }
  });

  it("never splits a surrogate pair, a ZWJ sequence, a flag or a combining mark", () => {
    for (let w = 1; w <= 10; w++) {
      const cut = truncateToWidth("😀😀😀😀😀😀", w);
      expect(cut).not.toMatch(LONE_SURROGATE);
      expect(stringWidth(cut)).toBeLessThanOrEqual(w);
    }
    expect(truncateToWidth("😀😀😀😀😀😀", 6)).toBe("😀😀…");
    expect(truncateToWidth("👩‍💻👩‍💻👩‍💻", 4)).toBe("👩‍💻…");
    expect(truncateToWidth("👨‍👩‍👧‍👦👨‍👩‍👧‍👦", 3)).toBe("👨‍👩‍👧‍👦…");
    expect(truncateToWidth("🇯🇵🇫🇷🇩🇪", 5)).toBe("🇯🇵🇫🇷…");
    expect(truncateToWidth("e\u0301e\u0301e\u0301e\u0301", 3)).toBe("e\u0301e\u0301…");
    expect(truncateToWidth("مُحَمَّد أحمد علي", 6)).toBe("مُحَمَّد…");
  });

  it("pads by display width", () => {
    expect(padToWidth("日本", 6)).toBe("日本  ");
    expect(padToWidth("👩‍💻", 4)).toBe("👩‍💻  ");
    expect(padToWidth("e\u0301", 3)).toBe("e\u0301  ");
    expect(padToWidth("1.2 MB", 8, "right")).toBe("  1.2 MB");
    expect(padToWidth("too long", 3)).toBe("too long");
  });
});

describe("later rows and notes", () => {
  const rows: PreviewRow[] = [
    row({ key: "NOW00001", title: "Now" }),
    row({ key: "LATER001", title: "Later one", action: "later (--limit)" }),
    row({ key: "LATER002", title: "Later two", action: "later (--limit)" }),
  ];

  it("hides rows beyond --limit and counts them", () => {
    const out = formatPreview(rows, { width: 160 });
    expect(out).toContain("NOW00001");
    expect(out).not.toContain("LATER001");
    expect(out).not.toContain("LATER002");
    expect(out.split("\n").at(-1)).toBe("… and 2 more to import in later runs (beyond --limit; --verbose lists them)");
  });

  it("lists them with showLater", () => {
    const out = formatPreview(rows, { width: 160, showLater: true });
    const lines = out.split("\n");
    expect(lines).toHaveLength(4);
    expect(lines[2]).toMatch(/^later +LATER001 .*beyond --limit$/);
    expect(out).not.toContain("more to import in later runs");
  });

  it("wraps the footer on a narrow terminal", () => {
    // 40 columns is below the table's minimums, but the footer is prose and wraps.
    const lines = formatPreview(rows, { width: 40 }).split("\n");
    expect(lines.length).toBeGreaterThan(3);
    for (const line of lines.slice(2)) expect(stringWidth(line)).toBeLessThanOrEqual(40);
    expect(lines.slice(2).join(" ").replace(/\s+/g, " ")).toBe("… and 2 more to import in later runs (beyond --limit; --verbose lists them)");
  });

  it("says when a PDF is not synced to Zotero storage", () => {
    const out = formatPreview(
      [
        row({ key: "SKIPPED1", title: "Only an unsynced PDF", action: "skip", size: null, unsynced: true }),
        row({ key: "IMPORTS1", title: "Another PDF works", unsynced: true }),
        row({ key: "DONE0001", title: "Done", action: "already done", reason: "on server", unsynced: true }),
      ],
      { width: 200 },
    ).split("\n");
    expect(out[1]!.endsWith(UNSYNCED_NOTE)).toBe(true);
    expect(out[2]!.endsWith(UNSYNCED_ALSO_NOTE)).toBe(true);
    expect(out[3]!.endsWith(`on server ${UNSYNCED_ALSO_NOTE}`)).toBe(true);
    expect(out[1]).toMatch(/^skip /);
    expect(out[3]).toMatch(/^done /);
  });
});

describe("sizeTotal", () => {
  it("sums when every size is known", () => {
    expect(sizeTotal([1 * 1024 * 1024, 3.3 * 1024 * 1024])).toBe("4.3 MB");
    expect(sizeTotal([512])).toBe("512 B");
    expect(sizeTotal([])).toBe("0 B");
  });

  it("gives a lower bound and the number unknown when some are unknown", () => {
    expect(sizeTotal([1 * 1024 * 1024, null, 3.3 * 1024 * 1024, null, null, null])).toBe("≥ 4.3 MB, 4 unknown");
    expect(sizeTotal([2048, null])).toBe("≥ 2.0 KB, 1 unknown");
  });

  it("says unknown size when none is known", () => {
    expect(sizeTotal([null, null])).toBe("unknown size");
  });
});

describe("formatPreviewTotals", () => {
  const base: PreviewCounts = {
    import: 6,
    alreadyDone: 3,
    skippedByReason: { "attachment is not a PDF": 3, "PDF not synced to Zotero storage": 2, "no attachment": 12, "a note, nothing to import": 0 },
    laterByLimit: 5,
    importSizes: [1 * 1024 * 1024, null, 3.3 * 1024 * 1024, null, null, null],
    serverKnown: true,
  };

  it("sums up the run with sizes and skip reasons, most frequent first", () => {
    expect(formatPreviewTotals(base).split("\n")).toEqual([
      "Dry run: would import 6 (≥ 4.3 MB, 4 unknown), already done 3, skip 17, leave 5 for later (--limit). Nothing was downloaded, uploaded or recorded.",
      "skip: no attachment 12, attachment is not a PDF 3, PDF not synced to Zotero storage 2",
    ]);
  });

  it("handles all sizes known, none known, and no skips", () => {
    const all = formatPreviewTotals({ ...base, import: 2, importSizes: [1 * 1024 * 1024, 3.3 * 1024 * 1024], skippedByReason: {}, laterByLimit: 0 });
    expect(all).toBe("Dry run: would import 2 (4.3 MB), already done 3, skip 0. Nothing was downloaded, uploaded or recorded.");
    const none = formatPreviewTotals({ ...base, import: 2, importSizes: [null, null] });
    expect(none.split("\n")[0]).toContain("would import 2 (unknown size),");
    const nothing = formatPreviewTotals({ ...base, import: 0, importSizes: [] });
    expect(nothing.split("\n")[0]).toContain("would import 0, already done 3");
  });

  it("warns when the server cannot tell what it holds", () => {
    expect(formatPreviewTotals(base)).not.toContain("cannot tell");
    expect(formatPreviewTotals({ ...base, serverKnown: false }).split("\n").at(-1)).toBe(
      "The server cannot tell which papers it holds: 'already done' counts only this computer's checkpoint.",
    );
  });

  it("wraps to a width when given", () => {
    const lines = formatPreviewTotals({ ...base, serverKnown: false }, { width: 60 }).split("\n");
    expect(lines.length).toBeGreaterThan(3);
    for (const line of lines) expect(stringWidth(line)).toBeLessThanOrEqual(60);
  });

  it("does not modify its input", () => {
    const counts = structuredClone(base);
    formatPreviewTotals(counts);
    expect(counts).toEqual(base);
  });
});

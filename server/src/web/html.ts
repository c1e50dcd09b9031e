/**
 * The one escaping helper of the web pages. Every page is built with the `html` tagged
 * template: each interpolated value is HTML-escaped (`& < > " '`) unless it is itself the
 * result of `html` (a `SafeHtml`), and arrays are rendered item by item. There is no other way
 * to make a `SafeHtml`, so text from the database (titles, authors, page text, filenames, error
 * messages) can only reach a page escaped. Attribute values are always written in double quotes
 * in the templates, where the same escaping is enough.
 */

const ESCAPES: Readonly<Record<string, string>> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

const brand: unique symbol = Symbol("SafeHtml");

/** Markup built by `html`: safe to send as it is. */
export interface SafeHtml {
  readonly [brand]: true;
  readonly value: string;
}

function safe(value: string): SafeHtml {
  return { [brand]: true, value };
}

function isSafe(v: unknown): v is SafeHtml {
  return typeof v === "object" && v !== null && (v as { [brand]?: unknown })[brand] === true;
}

/** What a template may interpolate: text and numbers (escaped), markup, lists; nothing for null/undefined/false. */
export type HtmlValue = SafeHtml | string | number | boolean | null | undefined | readonly HtmlValue[];

function render(v: HtmlValue): string {
  if (v === null || v === undefined || v === false || v === true) return "";
  if (isSafe(v)) return v.value;
  if (Array.isArray(v)) return (v as readonly HtmlValue[]).map(render).join("");
  return escapeHtml(String(v));
}

/** The tagged template: `html\`<td>${title}</td>\`` escapes `title`. */
export function html(strings: TemplateStringsArray, ...values: HtmlValue[]): SafeHtml {
  let out = strings[0] ?? "";
  values.forEach((v, i) => {
    out += render(v) + (strings[i + 1] ?? "");
  });
  return safe(out);
}

/** The page's text, as sent. */
export function toText(page: SafeHtml): string {
  return page.value;
}

import { createRequire } from "node:module";
import type { z as Zod } from "zod";

// zod through its CommonJS build: loading its ES modules (a hundred files, every locale
// included) costs about twice the CPU, and every run pays it at start-up.
const { z } = createRequire(import.meta.url)("zod") as { z: typeof Zod };

/**
 * The configuration file's shape. Same sections as RefServerLite's own
 * import script config.yml, plus `retry:` and `paths:`. Defaults live here and nowhere else.
 *
 * Strict on purpose, so a mistake stops the run before any network contact:
 *  - an unknown key is an error (with the closest known key as a suggestion);
 *  - nothing is coerced: a number is a YAML number, true/false a YAML boolean, text is text
 *    (the one exception: zotero.library_id may be a YAML number or digits in quotes);
 *  - `key:` with nothing after it (YAML null) is an error, not the default; only a whole
 *    section written empty (`retry:` alone) counts as an empty section.
 */

/** What the YAML gave, in words, for "expected X, got Y". Secrets never show their value. */
function describeValue(input: unknown, secret = false): string {
  if (input === null) return "nothing";
  if (typeof input === "boolean") return String(input);
  if (typeof input === "number") return secret ? "a number" : `the number ${input}`;
  if (typeof input === "string") {
    if (secret) return "text";
    return `the text ${JSON.stringify(input.length > 40 ? `${input.slice(0, 37)}...` : input)}`;
  }
  if (Array.isArray(input)) return "a list";
  if (typeof input === "object") return "a section of keys";
  return typeof input;
}

interface Expect {
  /** The key has a default: say how to get it back. */
  hasDefault?: boolean;
  /** Never echo the value (keys, passwords). */
  secret?: boolean;
  /** Said after a number or true/false given for text (e.g. "put it in quotes"). */
  hint?: string;
}

/** A zod error function: "expected X" when missing, "expected X, got Y" when wrong. */
function expected(what: string, o: Expect = {}) {
  return (issue: { input?: unknown }): string => {
    if (issue.input === undefined) return `expected ${what}`;
    if (issue.input === null) return `expected ${what}, got nothing${o.hasDefault ? ": write a value, or delete the line to get the default" : ""}`;
    const scalar = typeof issue.input === "number" || typeof issue.input === "boolean";
    return `expected ${what}, got ${describeValue(issue.input, o.secret)}${o.hint && scalar ? `: ${o.hint}` : ""}`;
  };
}

const QUOTE_HINT = "put it in quotes so YAML keeps it as written";

const httpUrl = (what: string, credentialsHint: string, example: string, hasDefault: boolean) =>
  z
    .string({ error: expected(`${what} as an http:// or https:// URL, e.g. ${example}`, { hasDefault }) })
    .trim()
    .superRefine((v, ctx) => {
      let url: URL;
      try {
        url = new URL(v);
      } catch {
        ctx.addIssue({ code: "custom", message: `expected ${what} as an http:// or https:// URL, e.g. ${example}` });
        return;
      }
      // Never echo the value: a URL with credentials or a query can hold a secret.
      if (url.protocol !== "http:" && url.protocol !== "https:") {
        ctx.addIssue({ code: "custom", message: `expected ${what} as an http:// or https:// URL, e.g. ${example}` });
      } else if (url.username !== "" || url.password !== "") {
        ctx.addIssue({ code: "custom", message: `must not hold user:password@ credentials: ${credentialsHint}` });
      } else if (v.includes("?")) {
        ctx.addIssue({ code: "custom", message: `must not hold a query string (?...): give only the address, e.g. ${example}` });
      } else if (v.includes("#")) {
        ctx.addIssue({ code: "custom", message: `must not hold a fragment (#...): give only the address, e.g. ${example}` });
      }
    })
    .transform((v) => v.replace(/\/+$/, ""));

const stringList = () =>
  z
    .array(z.string({ error: expected("every entry as text", { hint: QUOTE_HINT }) }), {
      error: expected('a list of text, e.g. [] or ["a", "b"]', { hasDefault: true }),
    })
    .default([]);

const positiveInt = (max: number) =>
  z
    .number({ error: expected(`a whole number from 1 to ${max}`, { hasDefault: true }) })
    .int(`expected a whole number from 1 to ${max}`)
    .min(1, `expected a whole number from 1 to ${max}`)
    .max(max, `expected a whole number from 1 to ${max}`);

const seconds = () => z.number({ error: expected("a number of seconds", { hasDefault: true }) }).min(0, "expected 0 or more seconds");

/** Where items come from: the Web API, the desktop's zotero.sqlite, or Zotero 7's local API. */
const ZOTERO_SOURCES = ["web", "local", "local-api"] as const;
export type ZoteroSourceKind = (typeof ZOTERO_SOURCES)[number];

/** Zotero 7's local API; user ID 0 means "the logged-in user". */
const LOCAL_API_URL = "http://127.0.0.1:23119/api";

/**
 * The values config.example.yml holds where the user must fill in their own. A config still
 * holding one is refused before any network contact (an environment variable that replaces
 * the value makes it irrelevant). test/unit/example-config.test.ts keeps this list and the
 * example file in step.
 */
export const EXAMPLE_PLACEHOLDERS = {
  "zotero.api_key": "your-zotero-api-key",
  "refserver.password": "your-refserver-password",
} as const;

/**
 * config.example.yml's zotero.library_id. Not refused on its own (it could be someone's real
 * ID); named in the api_key message when both are still the example's.
 */
export const EXAMPLE_LIBRARY_ID = "123456";

const LIBRARY_ID = "your Zotero user or group ID (digits, from zotero.org/settings/keys)";

/** A YAML number or digits as text; always text afterwards. */
const libraryId = z.unknown().transform((v, ctx) => {
  if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) return String(v);
  if (typeof v === "string" && /^\d+$/.test(v.trim())) return v.trim();
  ctx.addIssue({ code: "custom", message: expected(LIBRARY_ID)({ input: v }) });
  return z.NEVER;
});

const zoteroSection = z
  .strictObject(
    {
      source: z.enum(ZOTERO_SOURCES, { error: expected("web, local or local-api", { hasDefault: true }) }).default("web"),
      library_id: libraryId,
      library_type: z.enum(["user", "group"], { error: expected("user or group", { hasDefault: true }) }).default("user"),
      api_key: z.string({ error: expected("a Zotero API key as text (or set ZOTERO_API_KEY)", { secret: true, hint: QUOTE_HINT }) }).trim().default(""),
      api_url: httpUrl("the Zotero API address", "put the key in zotero.api_key (or ZOTERO_API_KEY)", "https://api.zotero.org", true).default("https://api.zotero.org"),
      /** source local: Zotero's data directory (zotero.sqlite, storage/). Default: the profile's, else ~/Zotero. */
      data_dir: z
        .string({ error: expected("a directory path", { hasDefault: true, hint: QUOTE_HINT }) })
        .trim()
        .min(1, "expected a directory path")
        .optional(),
    },
    { error: expected("a zotero: section with library_id and api_key") },
  )
  .superRefine((zotero, ctx) => {
    if (zotero.source !== "web") return;
    if (zotero.api_key === "") {
      ctx.addIssue({ code: "custom", path: ["api_key"], message: "expected a Zotero API key (or set ZOTERO_API_KEY)" });
    } else if (zotero.api_key === EXAMPLE_PLACEHOLDERS["zotero.api_key"]) {
      const alsoId = zotero.library_id === EXAMPLE_LIBRARY_ID ? `, and zotero.library_id (still the example's ${EXAMPLE_LIBRARY_ID}) with your user or group ID` : "";
      ctx.addIssue({
        code: "custom",
        path: ["api_key"],
        message: `still the example's placeholder "${zotero.api_key}": fill in your API key from zotero.org/settings/keys (or set ZOTERO_API_KEY)${alsoId}`,
      });
    }
  });

const refserverSection = z
  .strictObject(
    {
      api_url: httpUrl("the RefServer address", "put them in refserver.username and refserver.password (or REFSERVER_PASSWORD)", "http://localhost:8000", false),
      username: z
        .string({ error: expected("the RefServer admin user name (or set REFSERVER_USERNAME)", { hint: QUOTE_HINT }) })
        .trim()
        .min(1, "expected the RefServer admin user name (or set REFSERVER_USERNAME)"),
      password: z
        .string({ error: expected("the RefServer password (or set REFSERVER_PASSWORD)", { secret: true, hint: QUOTE_HINT }) })
        .min(1, "expected the RefServer password (or set REFSERVER_PASSWORD)"),
      timeout_seconds: seconds().positive("expected a timeout above 0 seconds").default(120),
    },
    { error: expected("a refserver: section with api_url, username and password") },
  )
  .superRefine((refserver, ctx) => {
    if (refserver.password === EXAMPLE_PLACEHOLDERS["refserver.password"]) {
      ctx.addIssue({ code: "custom", path: ["password"], message: `still the example's placeholder "${refserver.password}": fill in the RefServer admin password (or set REFSERVER_PASSWORD)` });
    }
  });

const importOptionsSection = z.strictObject(
  {
    batch_size: positiveInt(64).default(4),
    delay_seconds: seconds().default(0),
    collections: stringList(),
    exclude_tags: stringList(),
    item_types: stringList(),
    adaptive_pacing: z.boolean({ error: expected("true or false", { hasDefault: true }) }).default(true),
  },
  { error: expected("a section of keys (import_options: with indented lines under it)") },
);

const retrySection = z.strictObject(
  {
    retries: z
      .number({ error: expected("a whole number of retries from 0 to 100", { hasDefault: true }) })
      .int("expected a whole number of retries from 0 to 100")
      .min(0, "expected a whole number of retries from 0 to 100")
      .max(100, "expected a whole number of retries from 0 to 100")
      .default(8),
    min_delay_seconds: seconds().default(1),
    max_delay_seconds: seconds().default(60),
    give_up_after_seconds: seconds().default(600),
  },
  { error: expected("a section of keys (retry: with indented lines under it)") },
);

const path = () =>
  z
    .string({ error: expected("a path", { hasDefault: true, hint: QUOTE_HINT }) })
    .trim()
    .min(1, "expected a path")
    .optional();

const pathsSection = z.strictObject(
  {
    checkpoint: path(),
    cache_dir: path(),
    report_dir: path(),
  },
  { error: expected("a section of keys (paths: with indented lines under it)") },
);

export const configSchema = z.strictObject({
  zotero: zoteroSection,
  refserver: refserverSection,
  import_options: importOptionsSection.prefault({}),
  retry: retrySection.prefault({}),
  paths: pathsSection.prefault({}),
});

/** Every known key, per section ("" is the top level): for "did you mean". */
const KNOWN_KEYS: Record<string, readonly string[]> = {
  "": Object.keys(configSchema.shape),
  zotero: Object.keys(zoteroSection.shape),
  refserver: Object.keys(refserverSection.shape),
  import_options: Object.keys(importOptionsSection.shape),
  retry: Object.keys(retrySection.shape),
  paths: Object.keys(pathsSection.shape),
};

export type Config = Zod.infer<typeof configSchema>;
export type RawConfig = Zod.input<typeof configSchema>;

export interface ConfigProblem {
  key: string;
  message: string;
}

/** Pure: edit distance (insert, delete, substitute, swap two neighbours). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, d[i - 2]![j - 2]! + 1);
      d[i]![j] = best;
    }
  }
  return d[a.length]![b.length]!;
}

/** Pure: the known key closest to `unknown`, if close enough to be a likely typo. */
export function closestKey(unknown: string, known: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[-_\s]/g, "");
  const u = norm(unknown);
  let best: { key: string; distance: number } | undefined;
  for (const key of known) {
    const distance = norm(key) === u ? 0 : editDistance(unknown.toLowerCase(), key);
    if (!best || distance < best.distance) best = { key, distance };
  }
  if (!best) return undefined;
  const allowed = Math.max(1, Math.floor(Math.max(unknown.length, best.key.length) / 3));
  if (best.distance <= allowed) return best.key;
  // A shortened or lengthened name (max_delay for max_delay_seconds, retries_count for retries), if only one fits.
  const fits = known.filter((key) => {
    const k = norm(key);
    return (u.length >= 4 && k.startsWith(u)) || (k.length >= 4 && u.startsWith(k));
  });
  return fits.length === 1 ? fits[0] : undefined;
}

/** "unknown key; did you mean X?" within the section, else where the key belongs if elsewhere. */
function unknownKeyMessage(section: string, key: string): string {
  const close = closestKey(key, KNOWN_KEYS[section] ?? []);
  if (close !== undefined) return `unknown key; did you mean ${close}?`;
  // Misplaced rather than misspelt (wrong indentation, wrong section): only exact names.
  const norm = (s: string) => s.toLowerCase().replace(/[-_\s]/g, "");
  const elsewhere = Object.entries(KNOWN_KEYS)
    .filter(([other]) => other !== section)
    .flatMap(([other, keys]) => keys.filter((k) => norm(k) === norm(key)).map((k) => (other === "" ? `the top-level section ${k}:` : `${other}.${k} (under ${other}:)`)));
  if (elsewhere.length > 0) return `unknown key here; did you mean ${elsewhere.join(" or ")}? check the indentation`;
  const known = KNOWN_KEYS[section] ?? [];
  return `unknown key (known ${section ? `keys of ${section}` : "sections"}: ${known.join(", ")})`;
}

/** Pure: a whole optional section written empty (`retry:` with nothing under it) is an empty section. */
function emptySectionsAsEmpty(raw: unknown): unknown {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) return raw;
  const out: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  for (const name of ["import_options", "retry", "paths"]) if (out[name] === null) out[name] = {};
  return out;
}

/**
 * Pure: the defaults that depend on zotero.source. The local sources need no key and no
 * user ID (user 0, as Zotero's local API calls it), and local-api has its own address.
 * Only a missing key gets the default: `library_id:` with nothing is still an error.
 */
function zoteroSourceDefaults(raw: unknown): unknown {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) return raw;
  const zotero = (raw as Record<string, unknown>).zotero;
  if (!zotero || typeof zotero !== "object" || Array.isArray(zotero)) return raw;
  const z = zotero as Record<string, unknown>;
  if (z.source !== "local" && z.source !== "local-api") return raw;
  return {
    ...(raw as Record<string, unknown>),
    zotero: { ...z, ...(z.library_id === undefined ? { library_id: "0" } : {}), ...(z.source === "local-api" && z.api_url === undefined ? { api_url: LOCAL_API_URL } : {}) },
  };
}

/** Pure: raw parsed YAML → a typed config, or every problem with its key. */
export function validateConfig(raw: unknown): { config: Config; problems: [] } | { config: undefined; problems: ConfigProblem[] } {
  if (raw === null || raw === undefined) raw = {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    return { config: undefined, problems: [{ key: "(top level)", message: `expected sections zotero:, refserver: (see config.example.yml), got ${describeValue(raw)}` }] };
  }
  const result = configSchema.safeParse(zoteroSourceDefaults(emptySectionsAsEmpty(raw)));
  if (result.success) {
    const c = result.data;
    if (c.retry.max_delay_seconds < c.retry.min_delay_seconds) {
      return { config: undefined, problems: [{ key: "retry.max_delay_seconds", message: "expected a value not below retry.min_delay_seconds" }] };
    }
    return { config: c, problems: [] };
  }
  // Unknown keys first: a misspelt key also shows up as its missing twin, and the typo is the news.
  const unknown: ConfigProblem[] = [];
  const other: ConfigProblem[] = [];
  for (const issue of result.error.issues) {
    const at = issue.path.map(String).join(".");
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) unknown.push({ key: at ? `${at}.${key}` : key, message: unknownKeyMessage(at, key) });
    } else {
      other.push({ key: at || "(top level)", message: issue.message });
    }
  }
  return { config: undefined, problems: [...unknown, ...other] };
}

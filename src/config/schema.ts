import { z } from "zod";

/**
 * The configuration file's shape. Same sections as RefServerLite's own
 * import script config.yml, plus `retry:` and `paths:`. Defaults live here and nowhere else.
 */
const httpUrl = (what: string) =>
  z
    .string({ error: `expected ${what} as a URL string` })
    .trim()
    .refine((v) => {
      try {
        const u = new URL(v);
        return u.protocol === "http:" || u.protocol === "https:";
      } catch {
        return false;
      }
    }, `expected ${what} as an http:// or https:// URL`)
    .transform((v) => v.replace(/\/+$/, ""));

const stringList = (what: string) =>
  z.array(z.string({ error: `expected ${what} as a list of strings` }), { error: `expected ${what} as a list of strings` }).default([]);

const positiveInt = (what: string, max: number) =>
  z.coerce
    .number({ error: `expected ${what} as a whole number` })
    .int(`expected ${what} as a whole number`)
    .min(1, `expected ${what} of at least 1`)
    .max(max, `expected ${what} of at most ${max}`);

const seconds = (what: string) =>
  z.coerce.number({ error: `expected ${what} as a number of seconds` }).min(0, `expected ${what} of 0 or more seconds`);

/** Where items come from: the Web API, the desktop's zotero.sqlite, or Zotero 7's local API. */
export const ZOTERO_SOURCES = ["web", "local", "local-api"] as const;
export type ZoteroSourceKind = (typeof ZOTERO_SOURCES)[number];

/** Zotero 7's local API; user ID 0 means "the logged-in user". */
export const LOCAL_API_URL = "http://127.0.0.1:23119/api";

/**
 * Pure: the defaults that depend on zotero.source. The local sources need no key and no
 * user ID (user 0, as Zotero's local API calls it), and local-api has its own address.
 */
function zoteroSourceDefaults(raw: unknown): unknown {
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) return raw;
  const zotero = (raw as Record<string, unknown>).zotero;
  if (!zotero || typeof zotero !== "object" || Array.isArray(zotero)) return raw;
  const z = zotero as Record<string, unknown>;
  if (z.source !== "local" && z.source !== "local-api") return raw;
  return {
    ...(raw as Record<string, unknown>),
    zotero: { ...z, library_id: z.library_id ?? "0", ...(z.source === "local-api" && z.api_url === undefined ? { api_url: LOCAL_API_URL } : {}) },
  };
}

export const configSchema = z.object({
  zotero: z
    .object(
      {
        source: z.enum(ZOTERO_SOURCES, { error: "expected zotero.source: web, local or local-api" }).default("web"),
        library_id: z.coerce
          .string({ error: "expected your Zotero user or group ID (digits, from zotero.org/settings/keys)" })
          .trim()
          .regex(/^\d+$/, "expected your Zotero user or group ID (digits, from zotero.org/settings/keys)"),
        library_type: z.enum(["user", "group"], { error: "expected user or group" }).default("user"),
        api_key: z.string({ error: "expected a Zotero API key (or set ZOTERO_API_KEY)" }).trim().default(""),
        api_url: httpUrl("the Zotero API address").default("https://api.zotero.org"),
        /** source local: Zotero's data directory (zotero.sqlite, storage/). Default: the profile's, else ~/Zotero. */
        data_dir: z.string({ error: "expected zotero.data_dir as a directory path" }).trim().min(1, "expected zotero.data_dir as a directory path").optional(),
      },
      { error: "expected a zotero: section with library_id and api_key" },
    )
    .superRefine((zotero, ctx) => {
      if (zotero.source === "web" && zotero.api_key === "") ctx.addIssue({ code: "custom", path: ["api_key"], message: "expected a Zotero API key (or set ZOTERO_API_KEY)" });
    }),
  refserver: z.object(
    {
      api_url: httpUrl("the RefServer address"),
      username: z.string({ error: "expected the RefServer admin user name (or set REFSERVER_USERNAME)" }).trim().min(1, "expected the RefServer admin user name (or set REFSERVER_USERNAME)"),
      password: z.string({ error: "expected the RefServer password (or set REFSERVER_PASSWORD)" }).min(1, "expected the RefServer password (or set REFSERVER_PASSWORD)"),
      timeout_seconds: seconds("refserver.timeout_seconds").positive("expected a timeout above 0 seconds").default(120),
    },
    { error: "expected a refserver: section with api_url, username and password" },
  ),
  import_options: z
    .object({
      batch_size: positiveInt("batch_size", 64).default(4),
      delay_seconds: seconds("delay_seconds").default(0),
      collections: stringList("collections"),
      exclude_tags: stringList("exclude_tags"),
      item_types: stringList("item_types"),
      adaptive_pacing: z.boolean({ error: "expected adaptive_pacing: true or false" }).default(true),
    })
    .prefault({}),
  retry: z
    .object({
      retries: z.coerce.number({ error: "expected a whole number of retries" }).int("expected a whole number of retries").min(0).max(100).default(8),
      min_delay_seconds: seconds("min_delay_seconds").default(1),
      max_delay_seconds: seconds("max_delay_seconds").default(60),
      give_up_after_seconds: seconds("give_up_after_seconds").default(600),
    })
    .prefault({}),
  paths: z
    .object({
      checkpoint: z.string().optional(),
      cache_dir: z.string().optional(),
      report_dir: z.string().optional(),
    })
    .prefault({}),
});

export type Config = z.infer<typeof configSchema>;
export type RawConfig = z.input<typeof configSchema>;

export interface ConfigProblem {
  key: string;
  message: string;
}

/** Pure: raw parsed YAML → a typed config, or every problem with its key. */
export function validateConfig(raw: unknown): { config: Config; problems: [] } | { config: undefined; problems: ConfigProblem[] } {
  const result = configSchema.safeParse(zoteroSourceDefaults(raw ?? {}));
  if (result.success) {
    const c = result.data;
    if (c.retry.max_delay_seconds < c.retry.min_delay_seconds) {
      return { config: undefined, problems: [{ key: "retry.max_delay_seconds", message: "expected a value not below retry.min_delay_seconds" }] };
    }
    return { config: c, problems: [] };
  }
  const problems = result.error.issues.map((issue) => {
    const key = issue.path.map(String).join(".") || "(top level)";
    let message = issue.message;
    if (issue.code === "unrecognized_keys") message = `unknown key(s): ${issue.keys.join(", ")}`;
    return { key, message };
  });
  return { config: undefined, problems };
}

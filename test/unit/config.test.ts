import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { loadConfig } from "../../src/config/load.js";
import { cacheRootOf, preparePaths, reportDirOf } from "../../src/config/paths-check.js";
import { closestKey, EXAMPLE_PLACEHOLDERS, validateConfig, type Config } from "../../src/config/schema.js";
import { ImportError } from "../../src/errors.js";

const valid = {
  zotero: { library_id: "123456", api_key: "zkey-abcdef" },
  refserver: { api_url: "http://127.0.0.1:8000/", username: "admin", password: "pw-secret" },
};

const tempDirs: string[] = [];
afterEach(() => {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function tempDir(prefix = "ifz-config-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

function writeConfig(text: string, mode = 0o600): string {
  const path = join(tempDir(), "config.yml");
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

/** Valid sections to build a file from; a test appends the section it gets wrong. */
const ZOTERO = "zotero:\n  library_id: 42\n  api_key: zkey-abcdef\n";
const REFSERVER = "refserver:\n  api_url: http://127.0.0.1:1\n  username: admin\n  password: pw-secret\n";

/** The one-line CONFIG_INVALID message loadConfig throws for this file text. */
function configError(text: string, env: NodeJS.ProcessEnv = {}): { message: string; path: string } {
  const path = writeConfig(text);
  try {
    loadConfig(path, {}, env);
  } catch (error) {
    expect(error).toBeInstanceOf(ImportError);
    expect((error as ImportError).code).toBe("CONFIG_INVALID");
    const message = (error as ImportError).message;
    expect(message).not.toContain("\n");
    expect(message.startsWith(`${path}: `)).toBe(true);
    return { message, path };
  }
  throw new Error("expected loadConfig to refuse the config");
}

describe("config validation", () => {
  it("fills every default from one place", () => {
    const { config } = validateConfig(valid);
    expect(config).toBeDefined();
    expect(config!.zotero.api_url).toBe("https://api.zotero.org");
    expect(config!.zotero.library_type).toBe("user");
    expect(config!.refserver.api_url).toBe("http://127.0.0.1:8000");
    expect(config!.import_options).toMatchObject({ batch_size: 4, delay_seconds: 0, collections: [], exclude_tags: [], item_types: [] });
    expect(config!.retry).toMatchObject({ retries: 8, min_delay_seconds: 1, max_delay_seconds: 60 });
  });

  it.each([
    [{ ...valid, zotero: { ...valid.zotero, library_id: "me" } }, "zotero.library_id"],
    [{ ...valid, zotero: { ...valid.zotero, library_type: "team" } }, "zotero.library_type"],
    [{ ...valid, refserver: { ...valid.refserver, api_url: "localhost:8000" } }, "refserver.api_url"],
    [{ ...valid, import_options: { batch_size: 0 } }, "import_options.batch_size"],
    [{ ...valid, import_options: { delay_seconds: -1 } }, "import_options.delay_seconds"],
    [{ ...valid, retry: { retries: "many" } }, "retry.retries"],
    [{ zotero: valid.zotero }, "refserver"],
  ])("names the key of a wrong value (%#)", (raw, key) => {
    const { config, problems } = validateConfig(raw);
    expect(config).toBeUndefined();
    expect(problems[0]!.key).toBe(key);
    expect(problems[0]!.message).toMatch(/expected/);
  });

  it("reads secrets from the environment over the file", () => {
    const path = writeConfig("zotero:\n  library_id: 42\nrefserver:\n  api_url: http://127.0.0.1:1\n  username: admin\n");
    const { config } = loadConfig(path, {}, { ZOTERO_API_KEY: "env-key-1234", REFSERVER_PASSWORD: "env-pass-1234" });
    expect(config.zotero.api_key).toBe("env-key-1234");
    expect(config.refserver.password).toBe("env-pass-1234");
    expect(config.zotero.library_id).toBe("42");
  });

  it("gives a one-line error with the line of a YAML syntax error", () => {
    const path = writeConfig("zotero:\n  library_id: [1,\n");
    expect(() => loadConfig(path, {}, {})).toThrow(/not valid YAML at line \d+/);
  });

  it("warns when a file holding secrets is readable by others", () => {
    const text = "zotero:\n  library_id: 1\n  api_key: k-123456\nrefserver:\n  api_url: http://127.0.0.1:1\n  username: a\n  password: p-123456\n";
    expect(loadConfig(writeConfig(text, 0o644), {}, {}).warnings[0]).toMatch(/readable by others.*chmod 600/);
    expect(loadConfig(writeConfig(text, 0o600), {}, {}).warnings).toEqual([]);
  });

  it("lets --batch-size and --delay override the file", () => {
    const path = writeConfig("zotero: {library_id: 1, api_key: abcd}\nrefserver: {api_url: 'http://127.0.0.1:1', username: a, password: bbbb}\nimport_options: {batch_size: 2, delay_seconds: 9}\n");
    const { config } = loadConfig(path, { batchSize: 7, delaySeconds: 0 }, {});
    expect(config.import_options.batch_size).toBe(7);
    expect(config.import_options.delay_seconds).toBe(0);
  });

  it("says where to find an example when no config exists", () => {
    const dir = tempDir("ifz-none-");
    expect(() => loadConfig(undefined, {}, { XDG_CONFIG_HOME: dir }, dir)).toThrow(/config.example.yml/);
  });
});

describe("unknown keys", () => {
  it("refuses a misspelt key, naming it, the file and the closest known key of its section", () => {
    const { message, path } = configError(`${ZOTERO}${REFSERVER}import_options:\n  batchsize: 8\n`);
    expect(message).toBe(`${path}: import_options.batchsize: unknown key; did you mean batch_size?`);
  });

  it("refuses unknown keys at every level", () => {
    expect(configError(`${ZOTERO}${REFSERVER}zoterro:\n  library_id: 1\n`).message).toMatch(/: zoterro: unknown key; did you mean zotero\?$/);
    expect(configError(`zotero:\n  library_id: 42\n  api_key: k-1234\n  libary_type: group\n${REFSERVER}`).message).toMatch(/: zotero\.libary_type: unknown key; did you mean library_type\?$/);
    expect(configError(`${ZOTERO}${REFSERVER}  pasword: x\n`).message).toMatch(/: refserver\.pasword: unknown key; did you mean password\?$/);
    expect(configError(`${ZOTERO}${REFSERVER}retry:\n  max_delay: 5\n`).message).toMatch(/: retry\.max_delay: unknown key; did you mean max_delay_seconds\?$/);
    expect(configError(`${ZOTERO}${REFSERVER}paths:\n  report: /tmp/x\n`).message).toMatch(/: paths\.report: unknown key; did you mean report_dir\?$/);
  });

  it("puts the typo first even when it also leaves a required key missing", () => {
    const { message } = configError(`${ZOTERO}refserver:\n  api_ur: http://127.0.0.1:1\n  username: a\n  password: pw-1234\n`);
    expect(message).toMatch(/: refserver\.api_ur: unknown key; did you mean api_url\? \(and 1 more problem\)$/);
  });

  it("says where a key belongs when it sits in the wrong section", () => {
    expect(configError(`${ZOTERO}${REFSERVER}import_options:\n  retries: 3\n`).message).toMatch(/import_options\.retries: unknown key here; did you mean retry\.retries \(under retry:\)\?/);
    expect(configError(`${ZOTERO}${REFSERVER}batch_size: 3\n`).message).toMatch(/: batch_size: unknown key here; did you mean import_options\.batch_size/);
  });

  it("lists the known keys when nothing is close", () => {
    expect(configError(`${ZOTERO}${REFSERVER}retry:\n  colour: blue\n`).message).toMatch(/retry\.colour: unknown key \(known keys of retry: retries, min_delay_seconds, max_delay_seconds, give_up_after_seconds\)/);
  });

  it("closestKey suggests only near misses", () => {
    expect(closestKey("batchsize", ["batch_size", "delay_seconds"])).toBe("batch_size");
    expect(closestKey("Batch-Size", ["batch_size"])).toBe("batch_size");
    expect(closestKey("retires", ["retries", "min_delay_seconds"])).toBe("retries");
    expect(closestKey("colour", ["retries", "min_delay_seconds"])).toBeUndefined();
    expect(closestKey("x", [])).toBeUndefined();
    expect(closestKey("max_delay", ["min_delay_seconds", "max_delay_seconds"])).toBe("max_delay_seconds");
    expect(closestKey("delay", ["min_delay_seconds", "max_delay_seconds"])).toBeUndefined();
    expect(closestKey("timeout", ["api_url", "timeout_seconds"])).toBe("timeout_seconds");
  });
});

describe("no type coercion", () => {
  it.each([
    ["import_options:\n  batch_size: true\n", "import_options.batch_size", /expected a whole number from 1 to 64, got true$/],
    ['import_options:\n  batch_size: "4"\n', "import_options.batch_size", /expected a whole number from 1 to 64, got the text "4"$/],
    ['retry:\n  retries: ""\n', "retry.retries", /expected a whole number of retries from 0 to 100, got the text ""$/],
    ["retry:\n  retries: null\n", "retry.retries", /expected a whole number of retries .*, got nothing: write a value, or delete the line to get the default$/],
    ["retry:\n  retries:\n", "retry.retries", /got nothing: write a value, or delete the line/],
    ["import_options:\n  delay_seconds: [1]\n", "import_options.delay_seconds", /expected a number of seconds, got a list$/],
    ['import_options:\n  adaptive_pacing: "yes"\n', "import_options.adaptive_pacing", /expected true or false, got the text "yes"$/],
    ["import_options:\n  collections:\n", "import_options.collections", /expected a list of text.*got nothing/],
    ["import_options:\n  collections: Papers\n", "import_options.collections", /expected a list of text.*got the text "Papers"/],
    ["import_options:\n  exclude_tags: [1]\n", "import_options.exclude_tags.0", /expected every entry as text, got the number 1: put it in quotes/],
    ['refserver_extra: {}\n', "refserver_extra", /unknown key/],
    ["import_options: 5\n", "import_options", /expected a section of keys.*got the number 5$/],
    ["retry: [1, 2]\n", "retry", /expected a section of keys.*got a list$/],
    ["paths:\n  checkpoint:\n", "paths.checkpoint", /expected a path, got nothing/],
    ["paths:\n  report_dir: 7\n", "paths.report_dir", /expected a path, got the number 7: put it in quotes/],
  ])("refuses %j, naming %s and the expected type", (section, key, message) => {
    const { message: line, path } = configError(`${ZOTERO}${REFSERVER}${section}`);
    expect(line.startsWith(`${path}: ${key}: `)).toBe(true);
    expect(line.slice(`${path}: ${key}: `.length)).toMatch(message);
  });

  it.each([
    ["zotero:\n  library_id: 42\n  api_key: k-1234\n  library_type:\n", "zotero.library_type", /expected user or group, got nothing/],
    ["zotero:\n  library_id: true\n  api_key: k-1234\n", "zotero.library_id", /expected your Zotero user or group ID.*got true$/],
    ["zotero:\n  library_id: 12.5\n  api_key: k-1234\n", "zotero.library_id", /expected your Zotero user or group ID.*got the number 12.5$/],
    ["zotero:\n  library_id: -3\n  api_key: k-1234\n", "zotero.library_id", /got the number -3$/],
    ["zotero:\n  library_id:\n  api_key: k-1234\n", "zotero.library_id", /got nothing$/],
    ["zotero:\n  source: local\n  library_id:\n", "zotero.library_id", /got nothing$/],
    ["zotero:\n  library_id: 42\n  api_key: k-1234\n  api_url:\n", "zotero.api_url", /got nothing: write a value, or delete the line to get the default$/],
    ["zotero:\n  source: local\n  data_dir:\n", "zotero.data_dir", /expected a directory path, got nothing/],
    ["zotero: 5\n", "zotero", /expected a zotero: section.*got the number 5$/],
  ])("refuses a wrong zotero value %j", (zotero, key, message) => {
    const { message: line, path } = configError(`${zotero}${REFSERVER}`, { ZOTERO_API_KEY: "env-key-1234" });
    expect(line.startsWith(`${path}: ${key}: `)).toBe(true);
    expect(line.slice(`${path}: ${key}: `.length)).toMatch(message);
  });

  it("never echoes a secret that has the wrong type, and says to quote it", () => {
    const { message } = configError(`zotero:\n  library_id: 42\n  api_key: 987654321\n${REFSERVER}`);
    expect(message).toMatch(/zotero\.api_key: expected a Zotero API key as text .*got a number: put it in quotes/);
    expect(message).not.toContain("987654321");
    const pw = configError(`${ZOTERO}refserver:\n  api_url: http://127.0.0.1:1\n  username: admin\n  password: 24681357\n`).message;
    expect(pw).toMatch(/refserver\.password: .*got a number: put it in quotes/);
    expect(pw).not.toContain("24681357");
  });

  it("keeps what YAML gives for valid values: numbers, booleans, library_id as a number or digits", () => {
    const text = `zotero:\n  library_id: 123456\n  api_key: k-1234\n${REFSERVER}  timeout_seconds: 2.5\nimport_options:\n  batch_size: 8\n  delay_seconds: 0.5\n  adaptive_pacing: false\n  collections: [Papers, "2024"]\nretry:\n  retries: 0\n`;
    const { config } = loadConfig(writeConfig(text), {}, {});
    expect(config.zotero.library_id).toBe("123456");
    expect(config.refserver.timeout_seconds).toBe(2.5);
    expect(config.import_options).toMatchObject({ batch_size: 8, delay_seconds: 0.5, adaptive_pacing: false, collections: ["Papers", "2024"] });
    expect(config.retry.retries).toBe(0);
    expect(loadConfig(writeConfig(`zotero:\n  library_id: " 0042 "\n  api_key: k-1234\n${REFSERVER}`), {}, {}).config.zotero.library_id).toBe("0042");
  });

  it("takes a whole optional section written empty as an empty section", () => {
    const { config } = loadConfig(writeConfig(`${ZOTERO}${REFSERVER}import_options:\nretry:\npaths:\n`), {}, {});
    expect(config.import_options.batch_size).toBe(4);
    expect(config.retry.retries).toBe(8);
    expect(config.paths).toEqual({});
  });
});

describe("YAML that is not a config", () => {
  it("refuses an alias bomb (billion laughs) in one line naming the file", () => {
    const bomb = [
      'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
      "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]",
      "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]",
      "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]",
      "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]",
      "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]",
      "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]",
      "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]",
      "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]",
      "",
    ].join("\n");
    const { message } = configError(bomb);
    expect(message).toMatch(/: not usable YAML: Excessive alias count.*: write the values out instead of repeating aliases/);
  });

  it.each([
    ["a duplicate key", `${ZOTERO}${REFSERVER}refserver:\n  username: b\n`, /not valid YAML at line \d+, column \d+: Map keys must be unique$/],
    ["two documents", `${ZOTERO}---\n${REFSERVER}`, /not valid YAML at line \d+, column \d+: Source contains multiple documents/],
    ["an unknown tag", `${ZOTERO}${REFSERVER}import_options:\n  batch_size: !int 4\n`, /not valid YAML at line 9, column 15: Unresolved tag: !int$/],
    ["a list", "- zotero\n- refserver\n", /expected sections zotero:, refserver:/],
  ])("refuses %s in one line", (_what, text, message) => {
    expect(configError(text).message).toMatch(message);
  });

  it("refuses nesting deeper than the parser's stack in one line", () => {
    expect(configError(`x: ${"[".repeat(20_000)}${"]".repeat(20_000)}\n`).message).toMatch(/: not valid YAML at line 1, column \d+: Maximum call stack size exceeded$/);
  });

  it("turns anything else the parser throws into one line naming the file", async () => {
    vi.resetModules();
    vi.doMock("yaml", async (original) => ({
      ...(await original<typeof import("yaml")>()),
      parseDocument: () => {
        throw new TypeError("something unforeseen\nsecond line");
      },
    }));
    try {
      const fresh = await import("../../src/config/load.js");
      const path = writeConfig(`${ZOTERO}${REFSERVER}`);
      expect(() => fresh.loadConfig(path, {}, {})).toThrow(expect.objectContaining({ code: "CONFIG_INVALID", message: `${path}: not usable YAML (TypeError: something unforeseen): compare it with config.example.yml` }));
    } finally {
      vi.doUnmock("yaml");
      vi.resetModules();
    }
  });

  it("calls an empty file empty", () => {
    expect(configError("# nothing yet\n").message).toMatch(/: the file is empty: copy config\.example\.yml there and fill it in$/);
  });

  it("refuses a __proto__ key as an unknown key", () => {
    expect(configError(`${ZOTERO}${REFSERVER}__proto__:\n  polluted: true\n`).message).toMatch(/: __proto__: unknown key/);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe("placeholders from config.example.yml", () => {
  const placeholderKey = EXAMPLE_PLACEHOLDERS["zotero.api_key"];
  const placeholderPassword = EXAMPLE_PLACEHOLDERS["refserver.password"];

  it("refuses the example's API key, saying to fill it in (and the example's library ID with it)", () => {
    const { message, path } = configError(`zotero:\n  library_id: "123456"\n  api_key: "${placeholderKey}"\n${REFSERVER}`);
    expect(message).toMatch(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: zotero\\.api_key: still the example's placeholder "${placeholderKey}": fill in your API key`));
    expect(message).toMatch(/ZOTERO_API_KEY/);
    expect(message).toMatch(/zotero\.library_id \(still the example's 123456\)/);
    expect(configError(`zotero:\n  library_id: 42\n  api_key: "${placeholderKey}"\n${REFSERVER}`).message).not.toMatch(/library_id/);
  });

  it("refuses the example's RefServer password, saying to fill it in", () => {
    const { message, path } = configError(`${ZOTERO}refserver:\n  api_url: http://127.0.0.1:1\n  username: admin\n  password: "${placeholderPassword}"\n`);
    expect(message.startsWith(`${path}: refserver.password: still the example's placeholder`)).toBe(true);
    expect(message).toMatch(/fill in the RefServer admin password \(or set REFSERVER_PASSWORD\)$/);
  });

  it("accepts them when the environment replaces them", () => {
    const text = `zotero:\n  library_id: 42\n  api_key: "${placeholderKey}"\nrefserver:\n  api_url: http://127.0.0.1:1\n  username: admin\n  password: "${placeholderPassword}"\n`;
    const { config } = loadConfig(writeConfig(text), {}, { ZOTERO_API_KEY: "env-key-1234", REFSERVER_PASSWORD: "env-pass-1234" });
    expect(config.zotero.api_key).toBe("env-key-1234");
    expect(config.refserver.password).toBe("env-pass-1234");
  });

  it("ignores the placeholder API key of a local source, which uses no key", () => {
    const text = `zotero:\n  source: local\n  data_dir: /z\n  api_key: "${placeholderKey}"\n${REFSERVER}`;
    expect(loadConfig(writeConfig(text), {}, {}).config.zotero.source).toBe("local");
  });
});

describe("API addresses", () => {
  it.each([
    ["refserver.api_url", "http://127.0.0.1:8000/?token=abc", /must not hold a query string/],
    ["refserver.api_url", "http://127.0.0.1:8000/#top", /must not hold a fragment/],
    ["refserver.api_url", "http://admin:hunter2@127.0.0.1:8000", /must not hold user:password@ credentials: put them in refserver\.username and refserver\.password/],
    ["refserver.api_url", "ftp://127.0.0.1", /expected the RefServer address as an http:\/\/ or https:\/\/ URL/],
    ["zotero.api_url", "https://api.zotero.org/?key=abc", /must not hold a query string/],
    ["zotero.api_url", "https://api.zotero.org/#x", /must not hold a fragment/],
    ["zotero.api_url", "https://me:pw@api.zotero.org", /must not hold user:password@ credentials: put the key in zotero\.api_key/],
  ])("%s %s is refused, naming the key, without echoing it", (key, url, message) => {
    const zotero = key === "zotero.api_url" ? `zotero:\n  library_id: 42\n  api_key: k-1234\n  api_url: "${url}"\n` : ZOTERO;
    const refserver = key === "refserver.api_url" ? `refserver:\n  api_url: "${url}"\n  username: admin\n  password: pw-secret\n` : REFSERVER;
    const { message: line, path } = configError(`${zotero}${refserver}`);
    expect(line.startsWith(`${path}: ${key}: `)).toBe(true);
    expect(line).toMatch(message);
    expect(line).not.toContain("hunter2");
    expect(line).not.toContain("token=abc");
  });
});

describe("preparePaths", () => {
  function configWith(paths: Config["paths"]): Config {
    const { config } = validateConfig({ ...valid, paths });
    return config!;
  }
  function refusal(run: () => void): string {
    try {
      run();
    } catch (error) {
      expect((error as ImportError).code).toBe("CONFIG_INVALID");
      expect((error as Error).message).not.toContain("\n");
      return (error as Error).message;
    }
    throw new Error("expected preparePaths to refuse");
  }

  it("creates the checkpoint's directory, the report and cache directories, and leaves no probe behind", () => {
    const root = tempDir("ifz-paths-");
    const config = configWith({ checkpoint: "state/deep/checkpoint.ndjson", report_dir: "reports", cache_dir: "cache" });
    const env = { XDG_STATE_HOME: join(root, "xdg-state"), XDG_CACHE_HOME: join(root, "xdg-cache") };
    preparePaths(config, { env, cwd: root, checkpoint: "state/deep/checkpoint.ndjson" });
    for (const dir of ["state/deep", "reports", "cache"]) expect(readdirSync(join(root, dir))).toEqual([]);
    expect(reportDirOf(config, { env, cwd: root })).toBe(join(root, "reports"));
    expect(cacheRootOf(config, { env, cwd: root })).toBe(join(root, "cache"));
  });

  it("uses the XDG defaults when paths: is empty", () => {
    const root = tempDir("ifz-paths-");
    const env = { XDG_STATE_HOME: join(root, "s"), XDG_CACHE_HOME: join(root, "c") };
    preparePaths(configWith({}), { env, cwd: root, checkpoint: join(root, "s", "import-from-zotero", "checkpoint.ndjson") });
    expect(readdirSync(join(root, "s", "import-from-zotero", "reports"))).toEqual([]);
    expect(readdirSync(join(root, "c", "import-from-zotero"))).toEqual([]);
  });

  it("refuses a report_dir that is a file, naming the key and the path", () => {
    const root = tempDir("ifz-paths-");
    writeFileSync(join(root, "reports"), "not a directory");
    const message = refusal(() => preparePaths(configWith({ report_dir: "reports" }), { env: {}, cwd: root, checkpoint: join(root, "cp.ndjson"), cacheDir: join(root, "cache") }));
    expect(message).toBe(`paths.report_dir ${join(root, "reports")}: is a file, not a directory: choose another directory`);
  });

  it("refuses a cache_dir under a file (ENOTDIR)", () => {
    const root = tempDir("ifz-paths-");
    writeFileSync(join(root, "file"), "x");
    const message = refusal(() => preparePaths(configWith({ cache_dir: "file/cache" }), { env: {}, cwd: root, checkpoint: join(root, "cp.ndjson"), reportDir: join(root, "r") }));
    expect(message).toMatch(new RegExp(`^paths\\.cache_dir ${join(root, "file", "cache")}: .*\\(ENOTDIR\\): choose another directory$`));
  });

  it("refuses a checkpoint that is a directory, naming --checkpoint when it came from the flag", () => {
    const root = tempDir("ifz-paths-");
    mkdirSync(join(root, "cp"));
    const options = { env: {}, cwd: root, checkpoint: "cp", reportDir: join(root, "r"), cacheDir: null };
    expect(refusal(() => preparePaths(configWith({ checkpoint: "cp" }), options))).toBe(`paths.checkpoint ${join(root, "cp")}: is a directory, not a file: choose another file name`);
    expect(refusal(() => preparePaths(configWith({}), { ...options, checkpointFromFlag: true }))).toMatch(/^--checkpoint /);
  });

  it.skipIf(process.platform === "win32" || process.getuid?.() === 0)("refuses a directory it cannot write to (EACCES)", () => {
    const root = tempDir("ifz-paths-");
    const locked = join(root, "locked");
    mkdirSync(locked, { mode: 0o500 });
    try {
      const message = refusal(() => preparePaths(configWith({}), { env: {}, cwd: root, checkpoint: join(root, "cp.ndjson"), reportDir: locked, cacheDir: null }));
      expect(message).toBe(`paths.report_dir ${locked}: cannot write there (EACCES): choose another directory`);
    } finally {
      chmodSync(locked, 0o700);
    }
  });
});

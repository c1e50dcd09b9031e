import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.js";
import { validateConfig } from "../../src/config/schema.js";

const valid = {
  zotero: { library_id: "123456", api_key: "zkey-abcdef" },
  refserver: { api_url: "http://127.0.0.1:8000/", username: "admin", password: "pw-secret" },
};

function writeConfig(text: string, mode = 0o600): string {
  const dir = mkdtempSync(join(tmpdir(), "ifz-config-"));
  const path = join(dir, "config.yml");
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
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
    const dir = mkdtempSync(join(tmpdir(), "ifz-none-"));
    expect(() => loadConfig(undefined, {}, { XDG_CONFIG_HOME: dir }, dir)).toThrow(/config.example.yml/);
  });
});

import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { configSchema, EXAMPLE_LIBRARY_ID, EXAMPLE_PLACEHOLDERS, validateConfig } from "../../src/config/schema.js";

type Raw = Record<string, Record<string, unknown>>;

function withPlaceholdersFilled(raw: Raw): Raw {
  const copy = structuredClone(raw);
  for (const key of Object.keys(EXAMPLE_PLACEHOLDERS)) {
    const [section, name] = key.split(".") as [string, string];
    copy[section]![name] = `filled-in-${name}`;
  }
  return copy;
}

describe("config.example.yml", () => {
  const raw = parse(readFileSync(new URL("../../config.example.yml", import.meta.url), "utf8")) as Raw;

  it("is a valid configuration once its placeholders are filled in", () => {
    expect(validateConfig(withPlaceholdersFilled(raw)).problems).toEqual([]);
  });

  it("holds exactly the placeholders the validation refuses (EXAMPLE_PLACEHOLDERS cannot drift)", () => {
    for (const [key, value] of Object.entries(EXAMPLE_PLACEHOLDERS)) {
      const [section, name] = key.split(".") as [string, string];
      expect(raw[section]?.[name], key).toBe(value);
    }
    // Every "your-..." value in the example is a known placeholder.
    const yours = Object.entries(raw).flatMap(([section, values]) =>
      Object.entries(values ?? {})
        .filter(([, v]) => typeof v === "string" && /^your[-_]/i.test(v))
        .map(([name]) => `${section}.${name}`),
    );
    expect(yours.sort()).toEqual(Object.keys(EXAMPLE_PLACEHOLDERS).sort());
    expect(String(raw.zotero?.library_id)).toBe(EXAMPLE_LIBRARY_ID);
    // As copied, unfilled: refused, naming each placeholder and saying to fill it in.
    const { problems } = validateConfig(raw);
    expect(problems.map((p) => p.key).sort()).toEqual(Object.keys(EXAMPLE_PLACEHOLDERS).sort());
    for (const p of problems) expect(p.message).toMatch(/placeholder.*fill in/);
  });

  it("documents every key of the schema", () => {
    for (const [section, schema] of Object.entries(configSchema.shape)) {
      expect(raw, section).toHaveProperty(section);
      if (section === "paths") continue; // documented in comments: every key is optional
      const inner = (schema as unknown as { unwrap?: () => { shape: object }; shape?: object }).shape ?? (schema as unknown as { unwrap: () => { shape: object } }).unwrap().shape;
      for (const key of Object.keys(inner)) {
        expect(raw[section], `${section}.${key}`).toHaveProperty(key);
      }
    }
  });
});

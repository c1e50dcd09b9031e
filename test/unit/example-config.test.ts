import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { configSchema, validateConfig } from "../../src/config/schema.js";

describe("config.example.yml", () => {
  const raw = parse(readFileSync(new URL("../../config.example.yml", import.meta.url), "utf8")) as Record<string, Record<string, unknown>>;

  it("is a valid configuration", () => {
    expect(validateConfig(raw).problems).toEqual([]);
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

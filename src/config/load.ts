import { existsSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { parseDocument, type YAMLError } from "yaml";
import { ImportError } from "../errors.js";
import { registerSecret } from "../util/redact.js";
import { configDir } from "../util/paths.js";
import { validateConfig, type Config } from "./schema.js";

export interface LoadedConfig {
  config: Config;
  path: string;
  warnings: string[];
}

export interface ConfigOverrides {
  batchSize?: number | undefined;
  delaySeconds?: number | undefined;
  /** --zotero-dir: read this Zotero data directory (sets zotero.source: local and zotero.data_dir). */
  zoteroDir?: string | undefined;
}

/** Where we look when --config is not given, first match wins. */
function defaultConfigPaths(cwd: string, env: NodeJS.ProcessEnv): string[] {
  return [join(cwd, "config.yml"), join(cwd, "config.yaml"), join(configDir(env), "config.yml")];
}

/**
 * The only place that reads the config file, the environment and the flags.
 * Throws ImportError(CONFIG_*) with a one-line message naming the key.
 */
export function loadConfig(
  explicitPath: string | undefined,
  overrides: ConfigOverrides = {},
  env: NodeJS.ProcessEnv = process.env,
  cwd: string = process.cwd(),
): LoadedConfig {
  let path: string;
  if (explicitPath !== undefined) {
    path = resolve(cwd, explicitPath);
    if (!existsSync(path)) throw new ImportError("CONFIG_MISSING", `config file ${path} not found: check --config, or copy config.example.yml there`);
  } else {
    const found = defaultConfigPaths(cwd, env).find((p) => existsSync(p));
    if (!found) {
      throw new ImportError(
        "CONFIG_MISSING",
        `no config file: pass --config PATH or create ./config.yml (copy config.example.yml and fill in your keys)`,
      );
    }
    path = found;
  }

  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "error";
    const hint = code === "EISDIR" ? "it is a directory: give the path of the config file" : "check its permissions";
    throw new ImportError("CONFIG_INVALID", `config file ${path} cannot be read (${code}): ${hint}`);
  }

  const raw = parseYaml(text, path);
  if (raw === null || raw === undefined) throw new ImportError("CONFIG_INVALID", `${path}: the file is empty: copy config.example.yml there and fill it in`);
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new ImportError("CONFIG_INVALID", `${path}: expected sections zotero:, refserver: (see config.example.yml)`);
  }

  const merged = applyOverrides(raw as Record<string, unknown>, overrides, env, cwd);
  const { config, problems } = validateConfig(merged);
  if (!config) {
    const first = problems[0]!;
    const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? "s" : ""})` : "";
    throw new ImportError("CONFIG_INVALID", `${path}: ${first.key}: ${first.message}${more}`);
  }

  registerSecret(config.zotero.api_key);
  registerSecret(config.refserver.password);

  const warnings: string[] = [];
  const fileHasSecrets = hasSecretInFile(raw as Record<string, unknown>);
  if (fileHasSecrets && process.platform !== "win32") {
    const mode = statSync(path).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      warnings.push(
        `${path} holds secrets and is readable by others (mode ${mode.toString(8).padStart(3, "0")}): run chmod 600 ${path}, or move the secrets to ZOTERO_API_KEY / REFSERVER_PASSWORD`,
      );
    }
  }
  return { config, path, warnings };
}

/** The largest number of YAML aliases (*name) resolved: a config needs none; an alias bomb needs millions. */
const MAX_ALIAS_COUNT = 100;

/**
 * The file's text → plain data, or ImportError(CONFIG_INVALID) in one line naming the file.
 * Whatever the parser throws (syntax, an alias bomb's "Excessive alias count", anything else)
 * becomes that one line; warnings (an unknown !tag) count as mistakes too.
 */
function parseYaml(text: string, path: string): unknown {
  const oneLine = (message: string) => message.split("\n")[0]!.replace(/ at line \d+, column \d+:?$/, "").trim();
  try {
    const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
    const problem: YAMLError | undefined = doc.errors[0] ?? doc.warnings[0];
    if (problem) {
      const where = problem.linePos?.[0] ? ` at line ${problem.linePos[0].line}, column ${problem.linePos[0].col}` : "";
      throw new ImportError("CONFIG_INVALID", `${path}: not valid YAML${where}: ${oneLine(problem.message)}`);
    }
    return doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) as unknown;
  } catch (error) {
    if (error instanceof ImportError) throw error;
    const message = oneLine(error instanceof Error ? error.message : String(error));
    if (/alias/i.test(message)) {
      throw new ImportError("CONFIG_INVALID", `${path}: not usable YAML: ${message}: write the values out instead of repeating aliases (*name)`, { cause: error });
    }
    throw new ImportError("CONFIG_INVALID", `${path}: not usable YAML (${error instanceof Error ? error.name : "error"}: ${message}): compare it with config.example.yml`, { cause: error });
  }
}

/** A copy of a section to apply overrides to; null (the section written empty) is an empty one. Anything else is left for validation to name. */
function section(raw: Record<string, unknown>, name: string): Record<string, unknown> | undefined {
  const value = raw[name];
  if (value === undefined || value === null) return {};
  return typeof value === "object" && !Array.isArray(value) ? { ...(value as Record<string, unknown>) } : undefined;
}

function applyOverrides(raw: Record<string, unknown>, overrides: ConfigOverrides, env: NodeJS.ProcessEnv, cwd: string): Record<string, unknown> {
  const out: Record<string, unknown> = { ...raw };
  const zotero = section(raw, "zotero");
  const refserver = section(raw, "refserver");
  const importOptions = section(raw, "import_options");
  if (zotero) {
    applyZoteroOverrides(zotero, overrides, env, cwd);
    out.zotero = zotero;
  }
  if (refserver) {
    if (env.REFSERVER_USERNAME) refserver.username = env.REFSERVER_USERNAME;
    if (env.REFSERVER_PASSWORD) refserver.password = env.REFSERVER_PASSWORD;
    out.refserver = refserver;
  }
  if (importOptions) {
    if (overrides.batchSize !== undefined) importOptions.batch_size = overrides.batchSize;
    if (overrides.delaySeconds !== undefined) importOptions.delay_seconds = overrides.delaySeconds;
    out.import_options = importOptions;
  }
  return out;
}

function applyZoteroOverrides(zotero: Record<string, unknown>, overrides: ConfigOverrides, env: NodeJS.ProcessEnv, cwd: string): void {
  if (env.ZOTERO_API_KEY) zotero.api_key = env.ZOTERO_API_KEY;
  const zoteroDir = overrides.zoteroDir;
  if (zoteroDir !== undefined) {
    zotero.source = "local";
    zotero.data_dir = zoteroDir;
  }
  // A data directory is a path on this computer: ~ is the home directory, relative is from here.
  if (typeof zotero.data_dir === "string" && zotero.data_dir.trim() !== "") {
    const dir = zotero.data_dir.trim();
    zotero.data_dir = dir === "~" || dir.startsWith("~/") ? join(env.HOME || homedir(), dir.slice(2)) : resolve(cwd, dir);
  }
}

function hasSecretInFile(raw: Record<string, unknown>): boolean {
  const z = raw.zotero as Record<string, unknown> | undefined;
  const r = raw.refserver as Record<string, unknown> | undefined;
  return Boolean((z && typeof z === "object" && z.api_key) || (r && typeof r === "object" && r.password));
}

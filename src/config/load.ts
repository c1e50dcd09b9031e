import { existsSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { parse, YAMLParseError } from "yaml";
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
export function defaultConfigPaths(cwd: string, env: NodeJS.ProcessEnv): string[] {
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
    throw new ImportError("CONFIG_INVALID", `config file ${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? "error"}): check its permissions`);
  }

  let raw: unknown;
  try {
    raw = parse(text) ?? {};
  } catch (error) {
    if (error instanceof YAMLParseError) {
      const where = error.linePos?.[0] ? ` at line ${error.linePos[0].line}, column ${error.linePos[0].col}` : "";
      throw new ImportError("CONFIG_INVALID", `${path}: not valid YAML${where}: ${error.message.split("\n")[0]}`);
    }
    throw error;
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
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

function section(raw: Record<string, unknown>, name: string): Record<string, unknown> {
  const value = raw[name];
  return typeof value === "object" && value !== null && !Array.isArray(value) ? { ...(value as Record<string, unknown>) } : value === undefined || value === null ? {} : (value as Record<string, unknown>);
}

function applyOverrides(raw: Record<string, unknown>, overrides: ConfigOverrides, env: NodeJS.ProcessEnv, cwd: string): Record<string, unknown> {
  const zotero = section(raw, "zotero");
  const refserver = section(raw, "refserver");
  const importOptions = section(raw, "import_options");
  if (env.ZOTERO_API_KEY) zotero.api_key = env.ZOTERO_API_KEY;
  if (env.REFSERVER_USERNAME) refserver.username = env.REFSERVER_USERNAME;
  if (env.REFSERVER_PASSWORD) refserver.password = env.REFSERVER_PASSWORD;
  if (overrides.batchSize !== undefined) importOptions.batch_size = overrides.batchSize;
  if (overrides.delaySeconds !== undefined) importOptions.delay_seconds = overrides.delaySeconds;
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
  return { ...raw, zotero, refserver, import_options: importOptions };
}

function hasSecretInFile(raw: Record<string, unknown>): boolean {
  const z = raw.zotero as Record<string, unknown> | undefined;
  const r = raw.refserver as Record<string, unknown> | undefined;
  return Boolean((z && typeof z === "object" && z.api_key) || (r && typeof r === "object" && r.password));
}

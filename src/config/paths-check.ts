import { randomUUID } from "node:crypto";
import { accessSync, constants, mkdirSync, statSync, unlinkSync, writeFileSync, type Stats } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { ImportError } from "../errors.js";
import { cacheDir as defaultCacheDir, stateDir } from "../util/paths.js";
import type { Config } from "./schema.js";

type Where = { env: NodeJS.ProcessEnv; cwd: string };

/** Where reports go: paths.report_dir, else $XDG_STATE_HOME/import-from-zotero/reports. */
export function reportDirOf(config: Config, { env, cwd }: Where): string {
  return config.paths.report_dir ? resolve(cwd, config.paths.report_dir) : join(stateDir(env), "reports");
}

/** The download cache's root: paths.cache_dir, else $XDG_CACHE_HOME/import-from-zotero. */
export function cacheRootOf(config: Config, { env, cwd }: Where): string {
  return config.paths.cache_dir ? resolve(cwd, config.paths.cache_dir) : defaultCacheDir(env);
}

export interface PreparePathsOptions extends Where {
  /** The checkpoint file (checkpointPath()): its directory is created; the lock file sits beside it. */
  checkpoint: string;
  /** True when the checkpoint came from --checkpoint: errors name the flag instead of paths.checkpoint. */
  checkpointFromFlag?: boolean;
  /** Default: reportDirOf(config). */
  reportDir?: string;
  /** Default: cacheRootOf(config). null: skip (--no-cache). */
  cacheDir?: string | null;
}

/**
 * Before any network contact: create the checkpoint's directory, the report directory and the
 * cache directory (mkdir -p) and prove each writable by creating and removing a probe file.
 * Throws ImportError("CONFIG_INVALID") in one line naming the key (or --checkpoint), the path
 * and the errno code. A dry run writes nothing and need not call this.
 */
export function preparePaths(config: Config, options: PreparePathsOptions): void {
  const checkpointKey = options.checkpointFromFlag ? "--checkpoint" : "paths.checkpoint";
  const checkpoint = resolve(options.cwd, options.checkpoint);
  checkFileSpot(checkpointKey, checkpoint);
  writableDir("paths.report_dir", resolve(options.cwd, options.reportDir ?? reportDirOf(config, options)));
  const cache = options.cacheDir === undefined ? cacheRootOf(config, options) : options.cacheDir;
  if (cache !== null) writableDir("paths.cache_dir", resolve(options.cwd, cache));
}

function fail(key: string, path: string, problem: string, choose = "directory"): never {
  throw new ImportError("CONFIG_INVALID", `${key} ${path}: ${problem}: choose another ${choose}`);
}

function codeOf(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? "error";
}

/** The checkpoint is a file: its directory must be writable, and the file, if there, a writable file. */
function checkFileSpot(key: string, file: string): void {
  const stat = statOrUndefined(key, file);
  if (stat?.isDirectory()) fail(key, file, "is a directory, not a file", "file name");
  writableDir(key, dirname(file), file);
  if (stat) {
    try {
      accessSync(file, constants.R_OK | constants.W_OK);
    } catch (error) {
      fail(key, file, `cannot write there (${codeOf(error)})`, "file");
    }
  }
}

/** mkdir -p, then a probe file created and removed. `shown` is the path named in errors. */
function writableDir(key: string, dir: string, shown: string = dir): void {
  const stat = statOrUndefined(key, dir, shown);
  if (stat && !stat.isDirectory()) fail(key, shown, `${shown === dir ? "" : `${dir} `}is a file, not a directory`.trim());
  try {
    mkdirSync(dir, { recursive: true });
  } catch (error) {
    fail(key, shown, `cannot write there (${codeOf(error)})`);
  }
  const probe = join(dir, `.import-from-zotero-probe-${process.pid}-${randomUUID()}`);
  try {
    writeFileSync(probe, "", { flag: "wx", mode: 0o600 });
  } catch (error) {
    fail(key, shown, `cannot write there (${codeOf(error)})`);
  }
  try {
    unlinkSync(probe);
  } catch (error) {
    fail(key, shown, `cannot remove a file there (${codeOf(error)})`);
  }
}

/** stat, or undefined when nothing is there; other failures (ENOTDIR, EACCES) are the path's fault. */
function statOrUndefined(key: string, path: string, shown: string = path): Stats | undefined {
  try {
    return statSync(path);
  } catch (error) {
    const code = codeOf(error);
    if (code === "ENOENT") return undefined;
    fail(key, shown, code === "ENOTDIR" ? "a parent of it is a file, not a directory (ENOTDIR)" : `cannot write there (${code})`);
  }
}

/**
 * Where Zotero desktop keeps its data, and the two preferences of its profile's prefs.js
 * that matter to us: a custom data directory, and the base directory of linked files
 * stored as `attachments:relative/path`.
 *
 * Zotero's data directory (zotero.sqlite, storage/) defaults to ~/Zotero on every platform.
 * The profile directory (prefs.js) is elsewhere:
 *   Linux   ~/.zotero/zotero/<profile>/prefs.js
 *   macOS   ~/Library/Application Support/Zotero/Profiles/<profile>/prefs.js
 *   Windows %APPDATA%\Zotero\Zotero\Profiles\<profile>\prefs.js
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";

export interface PlatformInfo {
  platform: NodeJS.Platform;
  home: string;
  env: NodeJS.ProcessEnv;
}

export function currentPlatform(env: NodeJS.ProcessEnv = process.env): PlatformInfo {
  return { platform: process.platform, home: env.HOME || homedir(), env };
}

/** Zotero's default data directory: ~/Zotero everywhere (Zotero 5 and later). */
function defaultDataDir(p: PlatformInfo): string {
  return join(p.home, "Zotero");
}

/** The directories that hold Zotero profiles on this platform. */
function profileRoots(p: PlatformInfo): string[] {
  switch (p.platform) {
    case "darwin":
      return [join(p.home, "Library", "Application Support", "Zotero", "Profiles")];
    case "win32": {
      const appData = p.env.APPDATA || join(p.home, "AppData", "Roaming");
      return [join(appData, "Zotero", "Zotero", "Profiles")];
    }
    default:
      return [join(p.home, ".zotero", "zotero")];
  }
}

/** Every prefs.js of every Zotero profile found (usually one). */
function findPrefsFiles(p: PlatformInfo): string[] {
  const out: string[] = [];
  for (const root of profileRoots(p)) {
    let names: string[];
    try {
      names = readdirSync(root);
    } catch {
      continue;
    }
    for (const name of names.sort()) {
      const prefs = join(root, name, "prefs.js");
      try {
        if (statSync(prefs).isFile()) out.push(prefs);
      } catch {
        // not a profile
      }
    }
  }
  return out;
}

export type Prefs = Map<string, string | number | boolean>;

/**
 * Pure: the `user_pref("name", value);` lines of a prefs.js. String values are JSON-like
 * literals (Windows paths arrive with doubled backslashes).
 */
export function parsePrefs(text: string): Prefs {
  const prefs: Prefs = new Map();
  const re = /^\s*user_pref\(\s*"((?:[^"\\]|\\.)*)"\s*,\s*("(?:[^"\\]|\\.)*"|true|false|-?\d+(?:\.\d+)?)\s*\)\s*;/gm;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const name = m[1]!;
    const raw = m[2]!;
    let value: string | number | boolean;
    if (raw === "true" || raw === "false") value = raw === "true";
    else if (raw.startsWith('"')) {
      try {
        value = JSON.parse(raw) as string;
      } catch {
        value = raw.slice(1, -1);
      }
    } else value = Number(raw);
    prefs.set(name, value);
  }
  return prefs;
}

function readPrefs(path: string): Prefs {
  try {
    return parsePrefs(readFileSync(path, "utf8"));
  } catch {
    return new Map();
  }
}

/** The custom data directory a profile points at, if it sets one. */
function customDataDir(prefs: Prefs): string | null {
  const use = prefs.get("extensions.zotero.useDataDir");
  const dir = prefs.get("extensions.zotero.dataDir");
  return use === true && typeof dir === "string" && dir !== "" ? dir : null;
}

/** The base directory for `attachments:` linked files, if the profile sets one. */
export function baseAttachmentPath(prefs: Prefs): string | null {
  const base = prefs.get("extensions.zotero.baseAttachmentPath");
  return typeof base === "string" && base !== "" ? base : null;
}

function samePath(a: string, b: string): boolean {
  const norm = (s: string) => resolve(s).replace(/[\\/]+$/, "");
  return process.platform === "win32" || process.platform === "darwin" ? norm(a).toLowerCase() === norm(b).toLowerCase() : norm(a) === norm(b);
}

export interface ResolvedDataDir {
  dataDir: string;
  /** The profile prefs.js that belongs to this data directory, when one was found. */
  prefsFile: string | null;
  /** `extensions.zotero.baseAttachmentPath` of that profile. */
  baseAttachmentPath: string | null;
}

/**
 * The data directory to read (the configured one, else the profile's custom one, else
 * ~/Zotero) and the base directory for relative linked files from the matching profile.
 */
export function resolveDataDir(configured: string | undefined | null, p: PlatformInfo = currentPlatform()): ResolvedDataDir {
  const profiles = findPrefsFiles(p).map((file) => ({ file, prefs: readPrefs(file) }));
  let dataDir: string;
  if (configured) {
    dataDir = configured.startsWith("~/") || configured === "~" ? join(p.home, configured.slice(2)) : configured;
    if (!isAbsolute(dataDir)) dataDir = resolve(dataDir);
  } else {
    const custom = profiles.map((x) => customDataDir(x.prefs)).find((d): d is string => d !== null);
    dataDir = custom ?? defaultDataDir(p);
  }
  // The profile that uses this data directory: one that names it, else one that names
  // none while the directory is the default, else the only profile there is.
  const match =
    profiles.find((x) => {
      const custom = customDataDir(x.prefs);
      return custom !== null && samePath(custom, dataDir);
    }) ??
    profiles.find((x) => customDataDir(x.prefs) === null && samePath(defaultDataDir(p), dataDir)) ??
    (profiles.length === 1 ? profiles[0] : undefined);
  return { dataDir, prefsFile: match?.file ?? null, baseAttachmentPath: match ? baseAttachmentPath(match.prefs) : null };
}

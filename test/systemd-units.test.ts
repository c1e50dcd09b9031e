/**
 * contrib/systemd: the units the README tells people to install.
 * - Each names the installed bins from package.json directly (never npx) and carries the lines
 *   the README promises (restart, user, state directory, kill mode, stop timeout; the importer's
 *   oneshot, EnvironmentFile, SuccessExitStatus=75, daily persistent timer).
 * - Where `systemd-analyze` exists (Debian's systemd package), `systemd-analyze verify` parses
 *   every unit with no warning at all. It insists that ExecStart's program exists, so the units
 *   are verified from a temp copy whose bin paths point at this checkout's bins.
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const UNITS = join(ROOT, "contrib", "systemd");
const rootBins = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { bin: Record<string, string> }).bin;
const serverBins = (JSON.parse(readFileSync(join(ROOT, "server", "package.json"), "utf8")) as { bin: Record<string, string> }).bin;
/** Where the units expect `npm install -g` to have put each command, and this checkout's file for it. */
const BIN_DIR = "/usr/local/bin";
const CHECKOUT_BIN: Record<string, string> = {
  ...Object.fromEntries(Object.entries(rootBins).map(([name, file]) => [name, join(ROOT, file)])),
  ...Object.fromEntries(Object.entries(serverBins).map(([name, file]) => [name, join(ROOT, "server", file)])),
};

type Unit = Record<string, Record<string, string[]>>;

/** A unit file's sections and keys (each key's values in order); comments and blanks dropped. */
function parseUnit(text: string): Unit {
  const unit: Unit = {};
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header?.[1]) {
      section = header[1];
      unit[section] ??= {};
      continue;
    }
    const eq = line.indexOf("=");
    if (eq < 0 || section === "") throw new Error(`not a unit line: ${line}`);
    const values = ((unit[section] ??= {})[line.slice(0, eq)] ??= []);
    values.push(line.slice(eq + 1));
  }
  return unit;
}

const read = (name: string): Unit => parseUnit(readFileSync(join(UNITS, name), "utf8"));
const one = (unit: Unit, section: string, key: string): string => {
  const values = unit[section]?.[key];
  expect(values, `${section}.${key}`).toBeDefined();
  return values?.[values.length - 1] ?? "";
};

describe("contrib/systemd", () => {
  it("holds the server, importer and backup units and timers", () => {
    expect(readdirSync(UNITS).sort()).toEqual([
      "import-from-zotero.service",
      "import-from-zotero.timer",
      "refserver-lite-backup.service",
      "refserver-lite-backup.timer",
      "refserver-lite.service",
    ]);
    for (const name of readdirSync(UNITS)) expect(readFileSync(join(UNITS, name), "utf8"), name).not.toMatch(/^[^#\n]*\bnpx\b/m);
  });

  it("refserver-lite.service: the installed bin directly, restart on failure, own user, state directory, control-group kill, a stop timeout", () => {
    const u = read("refserver-lite.service");
    expect(Object.keys(serverBins)).toContain("refserver-lite");
    expect(one(u, "Service", "ExecStart")).toBe(`${BIN_DIR}/refserver-lite`);
    expect(one(u, "Service", "Type")).toBe("simple");
    expect(one(u, "Service", "Restart")).toBe("on-failure");
    expect(one(u, "Service", "User")).toBe("refserver");
    expect(one(u, "Service", "StateDirectory")).toBe("refserver-lite");
    expect(u.Service?.Environment).toContain("REFSERVER_DATA=%S/refserver-lite");
    expect(one(u, "Service", "KillMode")).toBe("control-group");
    // Past the server's own 30 s shutdown deadline, so systemd's SIGKILL never cuts a clean stop.
    expect(Number.parseInt(one(u, "Service", "TimeoutStopSec"), 10)).toBeGreaterThan(30);
    expect(one(u, "Install", "WantedBy")).toBe("multi-user.target");
  });

  it("import-from-zotero.service + .timer: oneshot --quiet run, secrets from an EnvironmentFile, exit 75 a success, daily and persistent", () => {
    const s = read("import-from-zotero.service");
    expect(Object.keys(rootBins)).toContain("import-from-zotero");
    const exec = one(s, "Service", "ExecStart").split(/\s+/);
    expect(exec[0]).toBe(`${BIN_DIR}/import-from-zotero`);
    expect(exec).toContain("--quiet");
    expect(one(s, "Service", "Type")).toBe("oneshot");
    expect(one(s, "Service", "EnvironmentFile")).toBe("/etc/import-from-zotero/secrets.env");
    expect(one(s, "Service", "SuccessExitStatus").split(/\s+/)).toContain("75");
    expect(one(s, "Service", "StateDirectory")).toBe("import-from-zotero");
    expect(one(s, "Service", "KillMode")).toBe("control-group");
    const t = read("import-from-zotero.timer");
    expect(one(t, "Timer", "OnCalendar")).toBe("daily");
    expect(one(t, "Timer", "Persistent")).toBe("true");
    expect(one(t, "Install", "WantedBy")).toBe("timers.target");
  });

  it("refserver-lite-backup.service + .timer: refserver-lite backup as the server's user, nightly", () => {
    const s = read("refserver-lite-backup.service");
    expect(one(s, "Service", "ExecStart")).toContain(`${BIN_DIR}/refserver-lite backup `);
    expect(one(s, "Service", "User")).toBe(one(read("refserver-lite.service"), "Service", "User"));
    expect(one(s, "Service", "Type")).toBe("oneshot");
    expect(one(read("refserver-lite-backup.timer"), "Timer", "Persistent")).toBe("true");
  });

  const analyze = (() => {
    try {
      execFileSync("systemd-analyze", ["--version"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();

  it.skipIf(!analyze)("systemd-analyze verify: every unit parses with no warning (bins pointed at this checkout)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ifz-units-"));
    try {
      const names = readdirSync(UNITS);
      for (const name of names) {
        let text = readFileSync(join(UNITS, name), "utf8");
        for (const [bin, file] of Object.entries(CHECKOUT_BIN)) text = text.split(`${BIN_DIR}/${bin}`).join(file);
        writeFileSync(join(dir, name), text);
      }
      const result = await promisify(execFile)("systemd-analyze", ["verify", "--man=no", ...names.map((n) => join(dir, n))], { cwd: dir }).then(
        (r) => ({ code: 0, stderr: r.stderr }),
        (err: { code?: number; stderr?: string }) => ({ code: err.code ?? 1, stderr: err.stderr ?? "" }),
      );
      expect(result).toEqual({ code: 0, stderr: "" });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

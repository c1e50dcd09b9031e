/**
 * The server's log: JSON lines when stderr is not a terminal, readable lines on one; each upload,
 * metadata update, PDF replacement and deletion logged once at info with doc_id, zotero_key and
 * title; one line per request only with -v (debug). `-v` means verbose and `-V` the version in
 * both commands.
 */
import { spawn, execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { formatLogLine } from "../src/log-format.js";
import { multipart, removeTempDirs, tempDataDir, uploadParts } from "./helpers/app.js";
import { makeSamplePdf } from "./helpers/pdf.js";
import { BIN, runCli } from "./helpers/process.js";

afterAll(removeTempDirs);

const IMPORTER_BIN = fileURLToPath(new URL("../../bin/import-from-zotero.js", import.meta.url));
const ADMIN_ENV = { REFSERVER_ADMIN_USER: "root", REFSERVER_ADMIN_PASSWORD: "logging-test-pass" };
const LISTENING = /refserver-lite listening on (http:\/\/127\.0\.0\.1:\d+)/;

interface Started {
  url: string;
  stderr: () => string;
  stop: () => Promise<number | null>;
}

/** The real server with exactly these flags (no --log-level added), stdout and stderr piped. */
async function start(args: string[], env: Record<string, string> = {}): Promise<Started> {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("REFSERVER_") && k !== "NO_COLOR" && v !== undefined) clean[k] = v;
  const child = spawn(process.execPath, [BIN, "--port", "0", ...args], { env: { ...clean, ...ADMIN_ENV, ...env } });
  let out = "";
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const m = LISTENING.exec(out);
      if (m?.[1]) resolve(m[1]);
    });
    void exited.then((code) => reject(new Error(`exited ${code} before listening: ${err}`)));
  });
  return {
    url,
    stderr: () => err,
    stop: async () => {
      child.kill("SIGTERM");
      return exited;
    },
  };
}

async function token(url: string): Promise<string> {
  const res = await fetch(`${url}/api/v1/auth/login`, { method: "POST", body: new URLSearchParams({ username: "root", password: "logging-test-pass" }) });
  return ((await res.json()) as { access_token: string }).access_token;
}

/** Upload, change the metadata, replace the PDF, delete: the four logged changes. */
async function lifeOfAPaper(url: string): Promise<string> {
  const auth = { authorization: `Bearer ${await token(url)}` };
  const up = multipart(uploadParts(makeSamplePdf(2, 1, "Logged"), { title: "Glacier dynamics, revisited", zotero_key: "LOGKEY01", zotero_library_id: "7" }));
  const res = await fetch(`${url}/api/v1/papers/upload_with_metadata`, { method: "POST", headers: { ...auth, "content-type": up.contentType }, body: up.body });
  expect(res.status).toBe(200);
  const docId = ((await res.json()) as { doc_id: string }).doc_id;
  const meta = await fetch(`${url}/api/v1/document/${docId}/metadata`, { method: "POST", headers: auth, body: new URLSearchParams({ title: "Glacier dynamics (2nd ed.)", year: "2021" }) });
  expect(meta.status).toBe(200);
  const pdf = multipart([{ name: "file", filename: "v2.pdf", content: makeSamplePdf(2, 1, "Replaced") }]);
  const put = await fetch(`${url}/api/v1/document/${docId}/pdf`, { method: "PUT", headers: { ...auth, "content-type": pdf.contentType }, body: pdf.body });
  expect(put.status).toBe(200);
  const del = await fetch(`${url}/api/v1/document/${docId}`, { method: "DELETE", headers: auth });
  expect(del.status).toBe(200);
  return docId;
}

describe("the server's log", () => {
  it("stderr not a terminal: JSON lines only; upload, metadata update, PDF replacement and deletion each logged once at info with doc_id, zotero_key and title; no request lines", async () => {
    const server = await start(["--data", await tempDataDir(), "--no-worker"]);
    const docId = await lifeOfAPaper(server.url);
    expect(await server.stop()).toBe(0);
    const lines = server.stderr().split("\n").filter((l) => l !== "");
    const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>); // throws on a line that is not JSON
    const events = records.filter((r) => typeof r.event === "string");
    expect(events.map((r) => [r.event, r.level, r.msg])).toEqual([
      ["paper.uploaded", 30, "paper uploaded"],
      ["paper.metadata_updated", 30, "metadata updated"],
      ["paper.pdf_replaced", 30, "PDF replaced"],
      ["paper.deleted", 30, "paper deleted"],
    ]);
    expect(events[0]).toMatchObject({ doc_id: docId, zotero_key: "LOGKEY01", title: "Glacier dynamics, revisited" });
    expect(events[1]).toMatchObject({ doc_id: docId, zotero_key: "LOGKEY01", title: "Glacier dynamics (2nd ed.)", fields: ["title", "year"] });
    expect(events[2]).toMatchObject({ doc_id: docId, zotero_key: "LOGKEY01", title: "Glacier dynamics (2nd ed.)" });
    expect(events[3]).toMatchObject({ doc_id: docId, zotero_key: "LOGKEY01", title: "Glacier dynamics (2nd ed.)" });
    expect(records.filter((r) => r.msg === "request" || r.msg === "incoming request" || r.msg === "request completed")).toEqual([]);
    expect(JSON.stringify(records)).not.toContain("logging-test-pass");
  });

  it("-v: one debug line per request (method, url, status, ms); the same changes still logged", async () => {
    const server = await start(["--data", await tempDataDir(), "--no-worker", "-v"]);
    await lifeOfAPaper(server.url);
    expect(await server.stop()).toBe(0);
    const records = server.stderr().split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Record<string, unknown>);
    const requests = records.filter((r) => r.msg === "request");
    expect(requests.map((r) => [r.level, r.method, r.status])).toEqual([
      [20, "POST", 200],
      [20, "POST", 200],
      [20, "POST", 200],
      [20, "PUT", 200],
      [20, "DELETE", 200],
    ]);
    expect(requests[1]).toMatchObject({ url: "/api/v1/papers/upload_with_metadata", ms: expect.any(Number), reqId: expect.any(String) });
    expect(records.filter((r) => typeof r.event === "string")).toHaveLength(4);
  });

  it("--log-format pretty: readable lines, one per change, naming the paper", async () => {
    const server = await start(["--data", await tempDataDir(), "--no-worker", "--log-format", "pretty"]);
    const docId = await lifeOfAPaper(server.url);
    expect(await server.stop()).toBe(0);
    const lines = server.stderr().split("\n").filter((l) => l !== "");
    for (const line of lines) expect(line).toMatch(/^\d\d:\d\d:\d\d\.\d{3} (TRACE|DEBUG|INFO |WARN |ERROR|FATAL) /);
    const uploaded = lines.filter((l) => l.includes(" paper uploaded "));
    expect(uploaded).toHaveLength(1);
    expect(uploaded[0]).toContain(`INFO  paper uploaded event=paper.uploaded doc_id=${docId} zotero_key=LOGKEY01 title="Glacier dynamics, revisited" bytes=`);
    expect(lines.filter((l) => / (metadata updated|PDF replaced|paper deleted) /.test(l))).toHaveLength(3);
    expect(server.stderr()).not.toContain("\x1b["); // no colour into a pipe
  });

  const hasScript = (() => {
    try {
      execFileSync("script", ["--version"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();

  it.skipIf(!hasScript)("on a terminal (a pty through script(1)) the default is readable lines", async () => {
    const dataDir = await tempDataDir();
    const clean: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("REFSERVER_") && v !== undefined) clean[k] = v;
    const cmd = [process.execPath, BIN, "--data", dataDir, "--port", "0", "--no-worker"].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(" ");
    const child = spawn("script", ["-qfec", cmd, "/dev/null"], { env: { ...clean, ...ADMIN_ENV, NO_COLOR: "1", TERM: "xterm" } });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    const exited = new Promise<void>((r) => child.on("exit", () => r()));
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 20_000);
      child.stdout.on("data", () => {
        const m = LISTENING.exec(out);
        if (m?.[1]) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
    });
    await lifeOfAPaper(url);
    const deadline = Date.now() + 10_000;
    while (!out.includes("paper deleted") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    child.kill("SIGTERM");
    await exited;
    const text = out.replace(/\r/g, "");
    expect(text).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO  paper uploaded event=paper\.uploaded doc_id=\S+ zotero_key=LOGKEY01 title="Glacier dynamics, revisited"/m);
    expect(text).toMatch(/INFO  paper deleted /);
    expect(text).not.toMatch(/^\{"level"/m);
  });
});

describe("-v and -V in both commands", () => {
  it("-V prints the version and -v is --verbose, for refserver-lite and import-from-zotero alike", async () => {
    const serverV = await runCli(["-V"]);
    expect(serverV).toMatchObject({ code: 0, stdout: expect.stringMatching(/^\d+\.\d+\.\d+\n$/) });
    const serverHelp = (await runCli(["--help"])).stdout;
    expect(serverHelp).toMatch(/^\s+-v, --verbose\s/m);
    expect(serverHelp).toMatch(/^\s+-V, --version\s/m);
    const importerV = execFileSync(process.execPath, [IMPORTER_BIN, "-V"], { encoding: "utf8" });
    expect(importerV).toBe(serverV.stdout);
    const importerHelp = execFileSync(process.execPath, [IMPORTER_BIN, "--help"], { encoding: "utf8" });
    expect(importerHelp).toMatch(/^\s+-v, --verbose\s/m);
    expect(importerHelp).toMatch(/^\s+-V, --version\s/m);
    const both = await runCli(["--data", "x", "-v", "--log-level", "warn"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/-v\/--verbose or --log-level, not both/);
    const badFormat = await runCli(["--data", "x", "--log-format", "xml"]);
    expect(badFormat.code).toBe(2);
    expect(badFormat.stderr).toMatch(/--log-format must be pretty or json/);
  });
});

describe("formatLogLine", () => {
  it("time, level, message, fields (quoted when they need it), reqId last; an error's stack under an error line; non-JSON passes through", () => {
    const t = new Date(2026, 0, 2, 3, 4, 5, 6).getTime();
    expect(formatLogLine(JSON.stringify({ level: 30, time: t, pid: 1, hostname: "h", reqId: "req-1", msg: "paper uploaded", doc_id: "d1", title: 'A "quoted" title', n: 3, ok: true, none: null }))).toBe(
      '03:04:05.006 INFO  paper uploaded doc_id=d1 title="A \\"quoted\\" title" n=3 ok=true none=null reqId=req-1\n',
    );
    expect(formatLogLine(JSON.stringify({ level: 50, time: t, msg: "unhandled error", err: { message: "boom", stack: "Error: boom\n    at x" } }))).toBe(
      '03:04:05.006 ERROR unhandled error err=boom\n    Error: boom\n        at x\n',
    );
    expect(formatLogLine("plain text")).toBe("plain text\n");
    expect(formatLogLine(JSON.stringify({ level: 40, time: t, msg: "m", component: "worker" }), true)).toBe(
      "\x1b[2m03:04:05.006\x1b[0m \x1b[33mWARN \x1b[0m m component=worker\n",
    );
  });
});

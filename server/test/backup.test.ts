/**
 * `refserver-lite backup DIR`: a consistent online backup, and a restore that works.
 *
 * The main test runs the real server process, keeps uploading (and replacing and deleting other
 * papers) while a backup process runs, then restores the backup as a new data directory, starts
 * a NEW server on it and checks that every paper acknowledged (200) before the backup began is
 * there with a byte-identical PDF, that no row lacks its file, and that no file lacks its row.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { backupCommand, backupDataDir, BACKUP_MANIFEST } from "../src/backup.js";
import { injectUpload, login, multipart, removeTempDirs, tempDataDir, testApp, uploadParts, type Part } from "./helpers/app.js";
import { makeSamplePdf } from "./helpers/pdf.js";
import { runCli, spawnServer } from "./helpers/process.js";

afterAll(removeTempDirs);

const ADMIN_ENV = { REFSERVER_ADMIN_USER: "root", REFSERVER_ADMIN_PASSWORD: "backup-test-pass" };
const md5 = (b: Buffer | Uint8Array): string => createHash("md5").update(b).digest("hex");

async function loginHttp(url: string): Promise<string> {
  const res = await fetch(`${url}/api/v1/auth/login`, { method: "POST", body: new URLSearchParams({ username: "root", password: "backup-test-pass" }) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { access_token: string }).access_token;
}

async function send(url: string, method: string, path: string, token: string, parts?: Part[]): Promise<{ status: number; body: unknown }> {
  const headers: Record<string, string> = { authorization: `Bearer ${token}` };
  let body: Buffer | undefined;
  if (parts) {
    const m = multipart(parts);
    body = m.body;
    headers["content-type"] = m.contentType;
  }
  const res = await fetch(`${url}${path}`, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, body: parsed };
}

interface Acked {
  docId: string;
  md5: string;
}

/** Rows and files of a data directory: which rows lack a file, which files lack a row. */
async function rowsAndFiles(dataDir: string): Promise<{ rows: string[]; files: string[]; rowsWithoutFile: string[]; filesWithoutRow: string[] }> {
  const db = new Database(join(dataDir, "refserver.db"), { readonly: true, fileMustExist: true });
  const rows = (db.prepare("SELECT file_path FROM paper").all() as Array<{ file_path: string }>).map((r) => r.file_path).sort();
  db.close();
  const files = (await readdir(join(dataDir, "pdfs"))).map((f) => `pdfs/${f}`).sort();
  return {
    rows,
    files,
    rowsWithoutFile: rows.filter((r) => !files.includes(r)),
    filesWithoutRow: files.filter((f) => !rows.includes(f)),
  };
}

describe("refserver-lite backup, while the server takes uploads", () => {
  it("a new server on the restored backup has every paper acknowledged before the backup began, each PDF md5-equal, and no row without its file", async () => {
    const dataDir = await tempDataDir();
    const outer = await tempDataDir();
    const target = join(outer, "backup-1");
    const server = spawnServer(["--data", dataDir], ADMIN_ENV);
    const url = await server.url;
    const token = await loginHttp(url);

    // Papers that will be replaced or deleted while the backup runs.
    const churn: string[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await send(url, "POST", "/api/v1/papers/upload_with_metadata", token, uploadParts(makeSamplePdf(2, 1, `Churn${i}`), { title: `churn ${i}`, zotero_key: `CHURN${i}`, zotero_library_id: "1" }));
      expect(r.status).toBe(200);
      churn.push((r.body as { doc_id: string }).doc_id);
    }

    const acked: Acked[] = [];
    let stop = false;
    let n = 0;
    const uploader = async (): Promise<void> => {
      while (!stop && n < 400) {
        const i = n++;
        const pdf = makeSamplePdf(3, 2, `Loop${i}`);
        const r = await send(url, "POST", "/api/v1/papers/upload_with_metadata", token, uploadParts(pdf, { title: `loop ${i}`, zotero_key: `LOOP${String(i).padStart(4, "0")}`, zotero_library_id: "1" }));
        expect(r.status).toBe(200);
        acked.push({ docId: (r.body as { doc_id: string }).doc_id, md5: md5(pdf) });
      }
    };
    let churned = 0;
    const churner = async (): Promise<void> => {
      let round = 0;
      while (!stop && round < 200) {
        const docId = churn[round % churn.length];
        round++;
        if (docId === undefined) continue;
        if (round % 5 === 0) {
          const r = await send(url, "DELETE", `/api/v1/document/${docId}`, token);
          expect([200, 404]).toContain(r.status);
        } else {
          const r = await send(url, "PUT", `/api/v1/document/${docId}/pdf`, token, [{ name: "file", filename: `new${round}.pdf`, content: makeSamplePdf(2, 1, `Replaced${round}`) }]);
          expect([200, 404]).toContain(r.status);
        }
        churned++;
      }
    };
    const loops = Promise.all([uploader(), uploader(), churner()]);
    while (acked.length < 6) await new Promise((r) => setTimeout(r, 20));

    const before = acked.slice(); // acknowledged before the backup began
    const backup = await runCli(["backup", target, "--data", dataDir]);
    const afterCount = acked.length;
    const churnedDuring = churned;
    stop = true;
    await loops;

    process.stderr.write(`backup: ${backup.stdout.trim()} (uploads acknowledged before: ${before.length}, by its end: ${afterCount}; churn requests during: ${churnedDuring})\n`);
    expect(backup.stderr).toBe("");
    expect(backup.code).toBe(0);
    expect(backup.stdout).toMatch(/^refserver-lite backup: .*backup-1: \d+ papers, \d+ PDFs \([\d.]+ MB\), jwt-secret; \d+ database snapshots?, [\d.]+ s\n$/);
    expect(afterCount).toBeGreaterThan(before.length); // uploads went on while the backup ran
    expect(churnedDuring).toBeGreaterThan(0);
    expect(existsSync(`${target}.partial`)).toBe(false);

    // What a backup holds: the database (one file, no WAL beside it), the PDFs, the secret, the manifest.
    const entries = (await readdir(target)).sort();
    expect(entries).toEqual(["jwt-secret", "pdfs", BACKUP_MANIFEST, "refserver.db"]);
    expect(readFileSync(join(target, "jwt-secret"))).toEqual(readFileSync(join(dataDir, "jwt-secret")));
    const manifest = JSON.parse(readFileSync(join(target, BACKUP_MANIFEST), "utf8")) as { papers: number; pdf_files: number; missing_in_source: string[] };
    expect(manifest.missing_in_source).toEqual([]);
    const check = await rowsAndFiles(target);
    expect(check.rowsWithoutFile).toEqual([]);
    expect(check.filesWithoutRow).toEqual([]);
    expect(manifest.papers).toBe(check.rows.length);
    expect(manifest.pdf_files).toBe(check.files.length);

    // Restore: the server stopped, the backup put in place of a data directory, a server started on it.
    server.child.kill("SIGTERM");
    expect((await server.exited).code).toBe(0);
    const restored = join(outer, "restored-data");
    await rename(target, restored);
    const second = spawnServer(["--data", restored, "--no-worker"], ADMIN_ENV);
    const url2 = await second.url;
    // A token signed before the backup is still good: the secret came along.
    const paper = await send(url2, "GET", `/api/v1/document/${before[0]?.docId}`, token);
    expect(paper.status).toBe(200);
    for (const a of before) {
      const res = await fetch(`${url2}/download/pdf/${a.docId}`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status, a.docId).toBe(200);
      expect(md5(Buffer.from(await res.arrayBuffer())), a.docId).toBe(a.md5);
    }
    second.child.kill("SIGTERM");
    expect((await second.exited).code).toBe(0);
    const afterRestore = await rowsAndFiles(restored);
    expect(afterRestore.rowsWithoutFile).toEqual([]);
    expect(afterRestore.filesWithoutRow).toEqual([]);
  });
});

describe("backupDataDir", () => {
  it("a paper replaced and another deleted right after the snapshot: a second snapshot, and the backup matches it", async () => {
    const dataDir = await tempDataDir();
    const outer = await tempDataDir();
    const app = await testApp({ dataDir });
    const token = await login(app);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await injectUpload(app, token, uploadParts(makeSamplePdf(2, 1, `Snap${i}`), { title: `snap ${i}` }));
      expect(res.statusCode).toBe(200);
      ids.push((res.json() as { doc_id: string }).doc_id);
    }
    const replacement = makeSamplePdf(2, 1, "Replacement");
    const report = await backupDataDir({
      dataDir,
      target: join(outer, "b"),
      afterSnapshot: async (snapshot) => {
        if (snapshot !== 1) return;
        const del = await app.inject({ method: "DELETE", url: `/api/v1/document/${ids[0]}`, headers: { authorization: `Bearer ${token}` } });
        expect(del.statusCode).toBe(200);
        const { body, contentType } = multipart([{ name: "file", filename: "r.pdf", content: replacement }]);
        const put = await app.inject({ method: "PUT", url: `/api/v1/document/${ids[1]}/pdf`, headers: { authorization: `Bearer ${token}`, "content-type": contentType }, payload: body });
        expect(put.statusCode).toBe(200);
      },
    });
    await app.close();
    expect(report.snapshots).toBe(2);
    expect(report.papers).toBe(2);
    expect(report.files).toBe(2);
    expect(report.missing).toEqual([]);
    const check = await rowsAndFiles(join(outer, "b"));
    expect(check.rowsWithoutFile).toEqual([]);
    expect(check.filesWithoutRow).toEqual([]);
    const db = new Database(join(outer, "b", "refserver.db"), { readonly: true });
    const row = db.prepare("SELECT file_path FROM paper WHERE doc_id = ?").get(ids[1]) as { file_path: string };
    db.close();
    expect(md5(readFileSync(join(outer, "b", row.file_path)))).toBe(md5(replacement));
  });

  it("refuses a non-empty DIR; takes an empty one; clears a DIR.partial left by an interrupted backup", async () => {
    const dataDir = await tempDataDir();
    const outer = await tempDataDir();
    const app = await testApp({ dataDir });
    await app.close();
    const full = join(outer, "full");
    await mkdir(full);
    await writeFile(join(full, "keep.txt"), "mine");
    await expect(backupDataDir({ dataDir, target: full })).rejects.toThrow(/exists and is not empty/);
    expect(readFileSync(join(full, "keep.txt"), "utf8")).toBe("mine");
    expect(existsSync(`${full}.partial`)).toBe(false);

    const empty = join(outer, "empty");
    await mkdir(empty);
    await mkdir(`${empty}.partial`);
    await writeFile(join(`${empty}.partial`, "half-written"), "x");
    const report = await backupDataDir({ dataDir, target: empty });
    expect(report.papers).toBe(0);
    expect((await readdir(empty)).sort()).toEqual(["jwt-secret", "pdfs", BACKUP_MANIFEST, "refserver.db"]);
    expect(existsSync(`${empty}.partial`)).toBe(false);

    await expect(backupDataDir({ dataDir: outer, target: join(dataDir, "..", "x") })).rejects.toThrow(/no refserver.db/);
    await expect(backupDataDir({ dataDir, target: join(dataDir, "inside") })).rejects.toThrow(/must not contain each other/);
  });

  it("a PDF missing from the data directory itself: the backup is written and names it (exit 3)", async () => {
    const dataDir = await tempDataDir();
    const outer = await tempDataDir();
    const app = await testApp({ dataDir });
    const token = await login(app);
    const res = await injectUpload(app, token, uploadParts(makeSamplePdf(2, 1, "Lost"), { title: "lost" }));
    const docId = (res.json() as { doc_id: string }).doc_id;
    await app.close();
    await rm(join(dataDir, "pdfs", `${docId}.pdf`));
    let out = "";
    let err = "";
    const code = await backupCommand(["--data", dataDir, join(outer, "b")], {
      stdout: { write: (s: string) => ((out += s), true) } as unknown as NodeJS.WritableStream,
      stderr: { write: (s: string) => ((err += s), true) } as unknown as NodeJS.WritableStream,
    }, {});
    expect(code).toBe(3);
    expect(out).toMatch(/1 papers, 0 PDFs/);
    expect(err).toContain(`pdfs/${docId}.pdf`);
    const manifest = JSON.parse(readFileSync(join(outer, "b", BACKUP_MANIFEST), "utf8")) as { missing_in_source: string[]; snapshots: number };
    expect(manifest.missing_in_source).toEqual([`pdfs/${docId}.pdf`]);
    expect(manifest.snapshots).toBe(2);
  });

  it("the CLI: --help, and exit 2 without DIR or --data", async () => {
    const help = await runCli(["backup", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Usage: refserver-lite backup DIR/);
    expect(help.stdout).toMatch(/Restore: stop the server/);
    const noDir = await runCli(["backup", "--data", "x"]);
    expect(noDir.code).toBe(2);
    expect(noDir.stderr).toMatch(/backup directory DIR is required/);
    const noData = await runCli(["backup", "somewhere"]);
    expect(noData.code).toBe(2);
    expect(noData.stderr).toMatch(/--data DIR is required/);
    const top = await runCli(["--help"]);
    expect(top.stdout).toContain("refserver-lite backup BACKUP_DIR --data DIR");
  });
});

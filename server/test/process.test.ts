import { existsSync, statSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { request } from "node:http";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { multipart, removeTempDirs, tempDataDir, uploadParts, waitFor } from "./helpers/app.js";
import { makeSamplePdf } from "./helpers/pdf.js";
import { runCli, spawnServer } from "./helpers/process.js";

afterAll(removeTempDirs);

const ADMIN_ENV = { REFSERVER_ADMIN_USER: "root", REFSERVER_ADMIN_PASSWORD: "s3cret-pass" };

async function loginHttp(url: string, user = "root", password = "s3cret-pass"): Promise<string> {
  const res = await fetch(`${url}/api/v1/auth/login`, { method: "POST", body: new URLSearchParams({ username: user, password }) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { access_token: string }).access_token;
}

async function uploadHttp(url: string, token: string, pdf: Buffer, key: string): Promise<number> {
  const { body, contentType } = multipart(uploadParts(pdf, { zotero_key: key, zotero_library_id: "1" }));
  const res = await fetch(`${url}/api/v1/papers/upload_with_metadata`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": contentType },
    body,
  });
  await res.arrayBuffer();
  return res.status;
}

describe("the refserver-lite command", () => {
  it("--help lists every flag and environment variable", async () => {
    const { code, stdout } = await runCli(["--help"]);
    expect(code).toBe(0);
    for (const word of [
      "--data", "--port", "--host", "--busy-timeout", "--max-upload-mb", "--no-worker", "--log-level",
      "--help", "--version", "REFSERVER_ADMIN_USER", "REFSERVER_ADMIN_PASSWORD", "REFSERVER_DATA", "REFSERVER_PORT",
      "REFSERVER_HOST", "REFSERVER_BUSY_TIMEOUT_MS", "REFSERVER_MAX_UPLOAD_MB", "REFSERVER_LOG_LEVEL",
      "--max-field-kb", "--public-read", "--login-ip-failures", "--login-user-failures", "--login-window-s",
      "REFSERVER_MAX_FIELD_KB", "REFSERVER_PUBLIC_READ", "REFSERVER_LOGIN_IP_FAILURES", "REFSERVER_LOGIN_USER_FAILURES",
      "REFSERVER_LOGIN_WINDOW_S",
    ]) {
      expect(stdout, word).toContain(word);
    }
  });

  it("refuses to start without --data, and rejects unknown flags", async () => {
    const none = await runCli([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--data DIR is required/);
    const bad = await runCli(["--data", "x", "--bogus"]);
    expect(bad.code).toBe(2);
  });

  it("prints a generated admin password once, then one parseable listening line", async () => {
    const dataDir = await tempDataDir();
    const first = spawnServer(["--data", dataDir]);
    const url = await first.url;
    const m = /created admin "admin" with password: (\S+) \(shown once\)/.exec(first.stdout());
    expect(m).not.toBeNull();
    await loginHttp(url, "admin", m?.[1] ?? "");
    first.child.kill("SIGTERM");
    expect((await first.exited).code).toBe(0);
    const second = spawnServer(["--data", dataDir]);
    await second.url;
    expect(second.stdout()).not.toMatch(/password/);
    expect(second.stdout().trim().split("\n")).toHaveLength(1);
    second.child.kill("SIGINT");
    expect((await second.exited).code).toBe(0);
  });

  it("SIGTERM finishes the in-flight upload, then exits 0 with the WAL checkpointed", async () => {
    const dataDir = await tempDataDir();
    const server = spawnServer(["--data", dataDir], ADMIN_ENV);
    const url = new URL(await server.url);
    const token = await loginHttp(url.origin);
    const { body, contentType } = multipart(uploadParts(makeSamplePdf(4, 2), { title: "in flight" }));
    const half = Math.floor(body.length / 2);
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        { host: url.hostname, port: url.port, method: "POST", path: "/api/v1/papers/upload_with_metadata", headers: { authorization: `Bearer ${token}`, "content-type": contentType, "content-length": body.length } },
        (res) => {
          let text = "";
          res.on("data", (d: Buffer) => (text += d.toString()));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
        },
      );
      req.on("error", reject);
      req.write(body.subarray(0, half));
      setTimeout(() => {
        server.child.kill("SIGTERM");
        setTimeout(() => req.end(body.subarray(half)), 300);
      }, 300);
    });
    const res = await answer;
    expect(res.status).toBe(200);
    const exit = await server.exited;
    expect(exit.code).toBe(0);
    const wal = join(dataDir, "refserver.db-wal");
    expect(!existsSync(wal) || statSync(wal).size === 0).toBe(true);
    const db = new Database(join(dataDir, "refserver.db"), { readonly: true });
    expect(db.prepare("SELECT COUNT(*) AS n FROM paper").get()).toEqual({ n: 1 });
    db.close();
  });

  it("SIGKILL during uploads, restart: rows and files agree and every queued job finishes", async () => {
    const dataDir = await tempDataDir();
    const first = spawnServer(["--data", dataDir], ADMIN_ENV);
    const url = await first.url;
    const token = await loginHttp(url);
    let answered = 0;
    const uploads = Array.from({ length: 16 }, (_, i) =>
      uploadHttp(url, token, makeSamplePdf(12, 3, `Kill${i}`), `KILL${String(i).padStart(4, "0")}`).then(
        (status) => {
          answered++;
          return status;
        },
        () => "killed" as const,
      ),
    );
    await waitFor(() => (answered >= 4 ? true : undefined));
    first.child.kill("SIGKILL");
    const outcomes = await Promise.all(uploads);
    expect((await first.exited).signal).toBe("SIGKILL");
    expect(outcomes.filter((o) => o === 200).length).toBeGreaterThanOrEqual(4);
    expect(outcomes.every((o) => o === 200 || o === "killed")).toBe(true);

    const second = spawnServer(["--data", dataDir], ADMIN_ENV);
    const url2 = await second.url;
    const token2 = await loginHttp(url2);
    await waitFor(async () => {
      const res = await fetch(`${url2}/api/v1/jobs?limit=500`, { headers: { authorization: `Bearer ${token2}` } });
      const body = (await res.json()) as { jobs: Array<{ status: string }> };
      return body.jobs.every((j) => j.status === "completed") ? true : undefined;
    }, 45_000);
    second.child.kill("SIGTERM");
    expect((await second.exited).code).toBe(0);

    const db = new Database(join(dataDir, "refserver.db"), { readonly: true });
    const rows = (db.prepare("SELECT file_path FROM paper").all() as Array<{ file_path: string }>).map((r) => r.file_path).sort();
    const jobs = db.prepare("SELECT status, COUNT(*) AS n FROM processingjob GROUP BY status").all();
    const orphans = db.prepare(
      "SELECT COUNT(*) AS n FROM paper p WHERE NOT EXISTS (SELECT 1 FROM processingjob j WHERE j.paper_id = p.doc_id) OR NOT EXISTS (SELECT 1 FROM metadata m WHERE m.paper_id = p.doc_id)",
    ).get();
    db.close();
    const files = (await readdir(join(dataDir, "pdfs"))).map((f) => `pdfs/${f}`).sort();
    expect(files).toEqual(rows);
    expect(rows.length).toBeGreaterThanOrEqual(outcomes.filter((o) => o === 200).length);
    expect(orphans).toEqual({ n: 0 });
    expect(jobs).toEqual([{ status: "completed", n: rows.length }]);
    expect(await readdir(join(dataDir, "tmp"))).toEqual([]);
  });
});

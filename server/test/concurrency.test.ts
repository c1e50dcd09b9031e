import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { startServer, type RunningServer } from "../src/server.js";
import { ADMIN, removeTempDirs, tempDataDir } from "./helpers/app.js";
import { makeSamplePdf } from "./helpers/pdf.js";
import { testDatabase } from "./helpers/pg.js";

const pgdb = await testDatabase("server/test/concurrency.test.ts");
afterAll(async () => {
  await pgdb?.drop();
  await removeTempDirs();
});

async function httpLogin(server: RunningServer): Promise<string> {
  const res = await fetch(`${server.url}/api/v1/auth/login`, {
    method: "POST",
    body: new URLSearchParams({ username: ADMIN.user, password: ADMIN.password }),
  });
  return ((await res.json()) as { access_token: string }).access_token;
}

async function httpUpload(server: RunningServer, token: string, pdf: Buffer, fields: Record<string, string>) {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  form.append("file", new Blob([pdf], { type: "application/pdf" }), "paper.pdf");
  const res = await fetch(`${server.url}/api/v1/papers/upload_with_metadata`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
    body: form,
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

// The same tests on both backends: SQLite (the default) and PostgreSQL.
for (const backend of ["sqlite", "postgres"] as const) describe.runIf(backend === "sqlite" || pgdb !== undefined)(`on ${backend}`, () => {
  const databaseUrl = async (): Promise<string | undefined> => (backend === "postgres" ? pgdb?.freshSchema() : undefined);
  describe(`concurrent uploads against a real listening server on ${backend}`, () => {
    it("32 concurrent uploads while the worker is busy: 32 x 200, no 500, every job completes", async () => {
      const dataDir = await tempDataDir();
      const server = await startServer({ dataDir, databaseUrl: await databaseUrl(), port: 0, host: "127.0.0.1", adminUser: ADMIN.user, adminPassword: ADMIN.password, workerPollIntervalMs: 50 });
      try {
        const token = await httpLogin(server);
        // Keep the worker busy with a backlog of larger documents.
        let lastBacklogJob = "";
        for (let i = 0; i < 6; i++) {
          const r = await httpUpload(server, token, makeSamplePdf(40, 3, `Backlog${i}`), { title: `backlog ${i}`, authors: "[]" });
          expect(r.status).toBe(200);
          lastBacklogJob = String(r.body.job_id);
        }
        // FIFO: the newest backlog job waits behind five 40-page documents, so the worker is busy.
        expect((await server.app.refserver.repo.getJob(lastBacklogJob))?.status).toBe("processing");
        const results = await Promise.all(
          Array.from({ length: 32 }, (_, i) =>
            httpUpload(server, token, makeSamplePdf(2, 2, `Load${i}`), {
              title: `load ${i}`,
              authors: '["A"]',
              zotero_key: `LOAD${String(i).padStart(4, "0")}`,
              zotero_library_id: "1",
            }),
          ),
        );
        expect(results.map((r) => r.status)).toEqual(Array(32).fill(200));
        await server.waitForIdle();
        const counts = await server.app.refserver.repo.counts();
        expect(counts).toEqual({ papers: 38, jobs: { completed: 38 } });
        expect(await readdir(join(dataDir, "pdfs"))).toHaveLength(38);
      } finally {
        await server.close();
      }
    });

    it("the same key uploaded concurrently: one 200, the rest 409 naming the winner; one paper, one file", async () => {
      const dataDir = await tempDataDir();
      const server = await startServer({ dataDir, databaseUrl: await databaseUrl(), port: 0, adminUser: ADMIN.user, adminPassword: ADMIN.password });
      try {
        const token = await httpLogin(server);
        const results = await Promise.all(
          Array.from({ length: 8 }, () =>
            httpUpload(server, token, makeSamplePdf(1, 1), { title: "t", authors: "[]", zotero_key: "RACE0001", zotero_library_id: "42" }),
          ),
        );
        const ok = results.filter((r) => r.status === 200);
        const dup = results.filter((r) => r.status === 409);
        expect(ok).toHaveLength(1);
        expect(dup).toHaveLength(7);
        const winner = ok[0]?.body.doc_id;
        for (const d of dup) {
          expect(d.body).toEqual({ detail: `Document with Zotero key 'RACE0001' already exists (doc_id: ${String(winner)})` });
        }
        expect((await server.app.refserver.repo.counts()).papers).toBe(1);
        expect(await readdir(join(dataDir, "pdfs"))).toEqual([`${String(winner)}.pdf`]);
        expect(await readdir(join(dataDir, "tmp"))).toEqual([]);
      } finally {
        await server.close();
      }
    });
  });
});

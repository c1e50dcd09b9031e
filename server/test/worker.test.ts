import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { DB_FILENAME } from "../src/app.js";
import { chunkPages } from "../src/worker/chunk.js";
import { extractPages } from "../src/worker/pdf.js";
import { injectUpload, login, removeTempDirs, tempDataDir, testApp, uploadParts, sqliteOf } from "./helpers/app.js";
import { holdLock } from "./helpers/lock-holder.js";
import { makeBrokenPdf, makeSamplePdf, makeTestPdf } from "./helpers/pdf.js";
import { writeFile } from "node:fs/promises";

afterAll(removeTempDirs);

describe("text and chunks", () => {
  it("extracts each page's text and splits paragraphs into chunks", async () => {
    const path = join(await tempDataDir(), "x.pdf");
    await writeFile(
      path,
      makeTestPdf({
        pages: [
          [["Alpha one.", "Alpha two."], ["Beta."]],
          [["Gamma (with parens) and \\ backslash."]],
        ],
      }),
    );
    const pages = await extractPages(path);
    expect(pages).toEqual(["Alpha one.\nAlpha two.\n\nBeta.", "Gamma (with parens) and \\ backslash."]);
    expect(chunkPages(pages ?? [])).toEqual([
      { pageNumber: 1, indexOnPage: 0, text: "Alpha one. Alpha two." },
      { pageNumber: 1, indexOnPage: 1, text: "Beta." },
      { pageNumber: 2, indexOnPage: 0, text: "Gamma (with parens) and \\ backslash." },
    ]);
  });
});

describe("background pipeline", () => {
  it("completes a job: page count, per-page text, chunks, and result.doc_id", async () => {
    const app = await testApp({ worker: true });
    const token = await login(app);
    const up = (await injectUpload(app, token, uploadParts(makeSamplePdf(3, 2)))).json() as { job_id: string; doc_id: string };
    await app.refserver.worker?.whenIdle();
    const job = await app.inject({ method: "GET", url: `/api/v1/job/${up.job_id}`, headers: { authorization: `Bearer ${token}` } });
    expect(job.json()).toEqual({
      job_id: up.job_id,
      filename: "paper.pdf",
      status: "completed",
      current_step: "completed",
      progress_percentage: 100,
      result: { doc_id: up.doc_id },
    });
    const doc = (await app.inject({ method: "GET", url: `/api/v1/document/${up.doc_id}`, headers: { authorization: `Bearer ${token}` } })).json() as { page_count: number; text: string };
    expect(doc.page_count).toBe(3);
    expect(doc.text).toContain("Sample page 3 paragraph 2");
    expect(await app.refserver.repo.pageTexts(up.doc_id)).toHaveLength(3);
    expect(await app.refserver.repo.chunkCount(up.doc_id)).toBe(6);
    await app.close();
  });

  it("a broken PDF fails its job with a message; the server and the next job carry on", async () => {
    const app = await testApp({ worker: true });
    const token = await login(app);
    const bad = (await injectUpload(app, token, uploadParts(makeBrokenPdf(), {}, "broken.pdf"))).json() as { job_id: string };
    const good = (await injectUpload(app, token, uploadParts(makeSamplePdf(1, 1)))).json() as { job_id: string };
    await app.refserver.worker?.whenIdle();
    const res = await app.inject({ method: "GET", url: `/api/v1/job/${bad.job_id}`, headers: { authorization: `Bearer ${token}` } });
    expect(res.json()).toMatchObject({ status: "failed", error: expect.stringMatching(/Could not read the PDF/) });
    const ok = await app.inject({ method: "GET", url: `/api/v1/job/${good.job_id}`, headers: { authorization: `Bearer ${token}` } });
    expect(ok.json()).toMatchObject({ status: "completed" });
    expect((await app.inject({ method: "GET", url: "/health" })).statusCode).toBe(200);
    await app.close();
  });

  it("resumes interrupted jobs on the next start, from the step they reached", async () => {
    const dataDir = await tempDataDir();
    const first = await testApp({ dataDir, worker: false });
    const token = await login(first);
    const ids: Array<{ job_id: string; doc_id: string }> = [];
    for (let i = 0; i < 3; i++) ids.push((await injectUpload(first, token, uploadParts(makeSamplePdf(2, 2)))).json() as { job_id: string; doc_id: string });
    const wrepo = first.refserver.workerRepo;
    // job 0: claimed, then the process died mid-extraction
    expect((await wrepo.claimNextJob(3))?.jobId).toBe(ids[0]?.job_id);
    // job 1: text step done (stored text has 2 paragraphs), died before chunking
    await wrepo.saveText(ids[1]?.job_id ?? "", ids[1]?.doc_id ?? "", ["stored para one\n\nstored para two"]);
    await first.close();

    const restarted = await testApp({ dataDir, worker: true });
    await restarted.refserver.worker?.whenIdle();
    for (const id of ids) {
      expect(await restarted.refserver.repo.getJob(id.job_id)).toMatchObject({ status: "completed", progress_percentage: 100 });
    }
    // job 1 resumed at chunking: its chunks come from the stored text, not a re-extraction
    expect(await restarted.refserver.repo.chunkCount(ids[1]?.doc_id ?? "")).toBe(2);
    expect(await restarted.refserver.repo.chunkCount(ids[0]?.doc_id ?? "")).toBe(4);
    await restarted.close();
  });

  it("fails a job that keeps getting interrupted instead of retrying it forever", async () => {
    const dataDir = await tempDataDir();
    const first = await testApp({ dataDir, worker: false });
    const token = await login(first);
    const up = (await injectUpload(first, token, uploadParts(makeSamplePdf(1, 1)))).json() as { job_id: string };
    sqliteOf(first).prepare("UPDATE processingjob SET attempts = 3 WHERE job_id = ?").run(up.job_id);
    await first.close();
    const app = await testApp({ dataDir, worker: true });
    await app.refserver.worker?.whenIdle();
    expect(await app.refserver.repo.getJob(up.job_id)).toMatchObject({ status: "failed", error_message: expect.stringMatching(/Gave up/) });
    await app.close();
  });

  it("never holds a transaction open while working: another process's commits abort no job", async () => {
    const dataDir = await tempDataDir();
    const app = await testApp({ dataDir, worker: false });
    const token = await login(app);
    const jobs: string[] = [];
    for (let i = 0; i < 6; i++) {
      jobs.push(((await injectUpload(app, token, uploadParts(makeSamplePdf(8, 3, `Doc${i}`)))).json() as { job_id: string }).job_id);
    }
    await app.close();
    const worker = await testApp({ dataDir, worker: true, workerPollIntervalMs: 20 });
    const writer = holdLock(join(dataDir, DB_FILENAME), "writer-loop", 2500);
    await writer.ready;
    await worker.refserver.worker?.whenIdle();
    expect(await writer.done).toBe(0);
    for (const id of jobs) expect((await worker.refserver.repo.getJob(id))?.status).toBe("completed");
    expect(worker.refserver.worker?.stats.aborted).toBe(0);
    await worker.close();
  });
});

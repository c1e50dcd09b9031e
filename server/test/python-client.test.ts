import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { startServer } from "../src/server.js";
import { ADMIN, removeTempDirs, tempDataDir } from "./helpers/app.js";
import { makeSamplePdf } from "./helpers/pdf.js";

afterAll(removeTempDirs);

const CLIENT = fileURLToPath(new URL("./python/refserver_client.py", import.meta.url));

interface Step {
  step: string;
  status: number;
  body: Record<string, unknown>;
}

function runPython(args: string[]): Promise<Step[]> {
  return new Promise((resolve, reject) => {
    execFile("python3", [CLIENT, ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${error.message}\n${stderr}`));
      else resolve(stdout.trim().split("\n").map((l) => JSON.parse(l) as Step));
    });
  });
}

describe("a Python client written like RefServerLite's own import script (requests)", () => {
  it("logs in with a form, uploads with data= and files= (non-ASCII filename, year left out), gets 409 for a repeat", async () => {
    const dataDir = await tempDataDir();
    const server = await startServer({ dataDir, port: 0, host: "127.0.0.1", adminUser: ADMIN.user, adminPassword: ADMIN.password, workerPollIntervalMs: 50 });
    try {
      const pdfPath = join(dataDir, "client.pdf");
      await writeFile(pdfPath, makeSamplePdf());
      const steps = await runPython([server.url, ADMIN.user, ADMIN.password, pdfPath]);
      const byName = new Map(steps.map((s) => [s.step, s]));
      expect(byName.get("login")).toMatchObject({ status: 200, body: { token_type: "bearer" } });
      const first = byName.get("upload")!;
      // The non-ASCII filename arrives intact (requests encodes it as the original client's would).
      expect(first).toMatchObject({ status: 200, body: { status: "processing", filename: "Ménabréa – Sketch.pdf" } });
      expect(byName.get("upload-again")).toMatchObject({
        status: 409,
        body: { detail: `Document with Zotero key 'ABCD2345' already exists (doc_id: ${String(first.body.doc_id)})` },
      });
      expect(byName.get("upload-no-year")!.status).toBe(200);
      expect(byName.get("job")).toMatchObject({ status: 200, body: { job_id: first.body.job_id } });
      const document = byName.get("document")!;
      expect(document.status).toBe(200);
      expect(JSON.stringify(document.body)).toContain("Sketch of the Analytical Engine");
      expect(JSON.stringify(document.body)).toContain("Charles Babbage");
    } finally {
      await server.close();
    }
  });
});

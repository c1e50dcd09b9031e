import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { sanitizeFilename } from "../src/storage.js";
import { injectUpload, listDir, login, removeTempDirs, tempDataDir, testApp, uploadParts } from "./helpers/app.js";
import { makeSamplePdf } from "./helpers/pdf.js";

afterAll(removeTempDirs);

describe("startup sweep", () => {
  it("removes temp files and PDFs no paper row names (a crash between rename and commit), keeps the rest", async () => {
    const dataDir = await tempDataDir();
    const app = await testApp({ dataDir });
    const token = await login(app);
    const kept = (await injectUpload(app, token, uploadParts(makeSamplePdf(1, 1)))).json() as { doc_id: string };
    await app.close();
    await mkdir(join(dataDir, "tmp"), { recursive: true });
    await writeFile(join(dataDir, "tmp", "half-written.partial"), "%PDF-1.4 partial");
    await writeFile(join(dataDir, "pdfs", "00000000-0000-0000-0000-000000000000.pdf"), "%PDF-1.4 orphan");
    const restarted = await testApp({ dataDir });
    expect(await listDir(join(dataDir, "tmp"))).toEqual([]);
    expect(await listDir(join(dataDir, "pdfs"))).toEqual([`${kept.doc_id}.pdf`]);
    await restarted.close();
  });
});

describe("sanitizeFilename", () => {
  it("drops directories, '..', control characters and leading dots", () => {
    expect(sanitizeFilename("../../etc/passwd.pdf")).toBe("passwd.pdf");
    expect(sanitizeFilename("..\\..\\win.pdf")).toBe("win.pdf");
    expect(sanitizeFilename("a..b.pdf")).toBe("a.b.pdf");
    expect(sanitizeFilename("bad\u0000name\n.pdf")).toBe("badname.pdf");
    expect(sanitizeFilename(".hidden.pdf")).toBe("hidden.pdf");
    expect(sanitizeFilename("..")).toBe("document.pdf");
    expect(sanitizeFilename("Über Eis.pdf")).toBe("Über Eis.pdf");
  });
});

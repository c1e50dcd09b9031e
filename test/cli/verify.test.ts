/**
 * `import-from-zotero verify`: Zotero, the checkpoint and the server reconciled, against the
 * real refserver-lite process (which lists its papers with their metadata) and against a
 * server that cannot list them (the fake, like the original RefServerLite).
 */
import { rmSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { makeSandbox, runCli } from "../helpers/cli.js";
import { FakeZotero, makeLibrary } from "../../fixtures/fake-zotero.js";
import { makePdf } from "../../fixtures/pdf.js";
import { startRefServer, type RefServerProcess } from "../helpers/refserver-process.js";
import { API_KEY, makeWorld, type World } from "../helpers/world.js";

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) {
    try {
      await cleanups.pop()!();
    } catch {
      /* best effort */
    }
  }
});

interface VerifyJson {
  papers: number;
  findings: { kind: string; key: string; detail: string }[];
  cannot: string[];
}

async function token(server: RefServerProcess): Promise<string> {
  const res = await fetch(`${server.url}/api/v1/auth/login`, { method: "POST", body: new URLSearchParams({ username: server.adminUser, password: server.adminPassword }) });
  return ((await res.json()) as { access_token: string }).access_token;
}

describe("verify", () => {
  it("finds lost papers, metadata drift and changed PDFs; --deep compares stored bytes; --repair fixes them and exits 0", async () => {
    const library = makeLibrary({ apiKey: API_KEY, libraryId: 4242, items: 6 });
    const zotero = new FakeZotero({ library });
    const z = await zotero.start();
    cleanups.push(() => z.close());
    const server = await startRefServer({ inProcess: true });
    cleanups.push(() => server.close());
    const sandbox = makeSandbox({ zoteroUrl: z.url, refserverUrl: server.url, libraryId: "4242", apiKey: API_KEY, username: server.adminUser, password: server.adminPassword });
    cleanups.push(() => rmSync(sandbox.dir, { recursive: true, force: true, maxRetries: 5 }));

    const first = await runCli([], sandbox);
    expect(first.code, first.stderr).toBe(0);
    const clean = await runCli(["verify", "--json", "--deep"], sandbox);
    expect(clean.code, clean.stderr).toBe(0);
    expect((JSON.parse(clean.stdout) as VerifyJson).findings).toEqual([]);
    expect((await runCli(["verify"], sandbox)).stdout).toMatch(/verify: Zotero, the checkpoint and .* agree \(6 papers\)/);

    const pairs = library.pdfPairs();
    const [lostPair, driftPair, pdfPair] = [pairs[0]!, pairs[1]!, pairs[2]!];
    const links = await server.apiLinks("4242");
    const docOf = (key: string): string => links.find((l) => l.zotero_key === key)!.doc_id;
    // The server loses one paper; someone edits another's title on the server; a PDF is replaced in Zotero.
    const t = await token(server);
    const del = await fetch(`${server.url}/api/v1/document/${docOf(lostPair.parent!.key)}`, { method: "DELETE", headers: { authorization: `Bearer ${t}` } });
    expect(del.status).toBe(200);
    const edit = await fetch(`${server.url}/api/v1/document/${docOf(driftPair.parent!.key)}/metadata`, { method: "POST", headers: { authorization: `Bearer ${t}` }, body: new URLSearchParams({ title: "Edited on the server" }) });
    expect(edit.status).toBe(200);
    library.setFile(pdfPair.attachment.key, makePdf({ title: "A new version", pages: ["new text"] }));

    const found = await runCli(["verify", "--json"], sandbox);
    expect(found.code).toBe(1);
    const report = JSON.parse(found.stdout) as VerifyJson;
    const kinds = Object.fromEntries(report.findings.map((f) => [f.key, f.kind]));
    expect(kinds).toEqual({ [lostPair.parent!.key]: "lost", [driftPair.parent!.key]: "metadata", [pdfPair.parent!.key]: "pdf-changed" });
    expect((await runCli(["verify"], sandbox)).stdout).toMatch(/verify: 3 differences \(1 lost .*, 1 metadata differs, 1 PDF changed in Zotero\)/);
    // verify changed nothing on the server.
    expect((await server.apiLinks("4242")).length).toBe(5);

    const repaired = await runCli(["verify", "--repair", "--json"], sandbox);
    expect(repaired.code, repaired.stderr).toBe(0);
    expect((JSON.parse(repaired.stdout) as VerifyJson).findings).toEqual([]);
    const after = await server.apiLinks("4242");
    expect(after.map((l) => l.zotero_key).sort()).toEqual(pairs.map((p) => p.parent!.key).sort());
    expect((after as { zotero_key: string; title?: string }[]).find((l) => l.zotero_key === driftPair.parent!.key)?.title).toBe(driftPair.parent!.data.title);
    // The replaced PDF went through PUT …/pdf: same doc_id, the new bytes.
    expect(after.find((l) => l.zotero_key === pdfPair.parent!.key)?.doc_id).toBe(docOf(pdfPair.parent!.key));
    const deep = await runCli(["verify", "--deep", "--json"], sandbox);
    expect(deep.code, deep.stdout).toBe(0);
  });

  it("against a server that cannot list its papers, says which checks it cannot make", async () => {
    const world: World = await makeWorld({ library: { items: 2 } });
    cleanups.push(() => world.close());
    expect((await runCli([], world.sandbox)).code).toBe(0);
    const r = await runCli(["verify"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/cannot check: the server cannot list the papers it holds/);
  });
});

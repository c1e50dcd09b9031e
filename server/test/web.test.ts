/**
 * The web pages in a real headless Chromium (Debian's `chromium`, driven by puppeteer-core),
 * against the real server process: login page for anonymous visitors, login through the form,
 * the library, search, a paper, the PDF download (md5 of the bytes the browser saved), the
 * jobs page, a title made of markup shown as text (no dialog), a screenshot, logout.
 *
 * Chromium must be installed (`apt-get install -y chromium`; `.ci/run` does it when missing, or
 * set CHROMIUM_PATH): without it this file FAILS, it does not skip.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer, { type Browser, type CDPSession, type Page } from "puppeteer-core";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { multipart, removeTempDirs, tempDataDir, uploadParts, waitFor } from "./helpers/app.js";
import { makeTestPdf } from "./helpers/pdf.js";
import { spawnServer, type ServerProcess } from "./helpers/process.js";

const CANDIDATES = [process.env.CHROMIUM_PATH, "/usr/bin/chromium", "/usr/bin/chromium-browser"].filter(
  (p): p is string => typeof p === "string" && p !== "",
);
const ADMIN = { user: "librarian", password: "a long browser test password" };
const SCRIPT_TITLE = "<script>alert(1)</script>";
const CJK_TITLE = "氷床の融解と海面上昇";
const PLAIN_TITLE = "Drumlin fields of the northern plateau";
const TEXT_WORD = "esker"; // only in the plain paper's page text

function chromiumPath(): string {
  const found = CANDIDATES.find((p) => existsSync(p));
  if (!found) {
    throw new Error(
      `Chromium not found (looked at ${CANDIDATES.join(", ")}). The browser test needs a real Chromium: ` +
        "install Debian's package with `apt-get install -y chromium` (.ci/run does this when it is missing) " +
        "or point CHROMIUM_PATH at a Chromium binary.",
    );
  }
  return found;
}

const papers = {
  plain: makeTestPdf({
    pages: [
      [["Drumlin fields of the northern plateau."], [`An ${TEXT_WORD} winds between the drumlins.`]],
      [["Second page."]],
    ],
  }),
  script: makeTestPdf({ pages: [[["A paper whose title is markup."]]] }),
  cjk: makeTestPdf({ pages: [[["Sea level and ice sheets."]]] }),
};
const md5 = (b: Buffer) => createHash("md5").update(b).digest("hex");

let server: ServerProcess;
let base: string;
let token: string;
let browser: Browser | undefined;
let page: Page;
let profileDir: string | undefined;
const docIds: Record<keyof typeof papers, string> = { plain: "", script: "", cjk: "" };
const dialogs: string[] = [];

async function upload(title: string, pdf: Buffer, key: string): Promise<string> {
  const { body, contentType } = multipart(
    uploadParts(pdf, { title, authors: JSON.stringify(["Ada Lovelace", "山田 太郎"]), year: "2021", zotero_key: key, zotero_library_id: "1" }),
  );
  const res = await fetch(`${base}/api/v1/papers/upload_with_metadata`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": contentType },
    body,
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { doc_id: string }).doc_id;
}

/** Go somewhere and wait for the page to load. */
async function visit(path: string): Promise<void> {
  await page.goto(`${base}${path}`, { waitUntil: "load" });
}

// The callbacks below run in the browser; this file is type-checked without the DOM library.
declare const document: { cookie: string; querySelectorAll(selector: string): { length: number } };
type FormField = { value: string };

const textOf = (selector: string) => page.$$eval(selector, (els) => els.map((e) => e.textContent ?? ""));

/** Why the setup failed (no Chromium, say): each test then fails with it rather than being skipped. */
let setupError: unknown;

beforeAll(async () => {
  try {
    await setUp();
  } catch (err) {
    setupError = err;
  }
}, 120_000);

beforeEach(() => {
  if (setupError !== undefined) throw setupError;
});

async function setUp(): Promise<void> {
  const executablePath = chromiumPath();
  server = spawnServer(["--data", await tempDataDir()], { REFSERVER_ADMIN_USER: ADMIN.user, REFSERVER_ADMIN_PASSWORD: ADMIN.password });
  base = await server.url;
  const login = await fetch(`${base}/api/v1/auth/login`, { method: "POST", body: new URLSearchParams({ username: ADMIN.user, password: ADMIN.password }) });
  token = ((await login.json()) as { access_token: string }).access_token;
  // Oldest first: the library lists the CJK paper first.
  docIds.plain = await upload(PLAIN_TITLE, papers.plain, "PLAIN001");
  docIds.script = await upload(SCRIPT_TITLE, papers.script, "SCRIPT01");
  docIds.cjk = await upload(CJK_TITLE, papers.cjk, "CJK00001");
  await waitFor(async () => {
    const res = await fetch(`${base}/api/v1/jobs`, { headers: { authorization: `Bearer ${token}` } });
    const { jobs } = (await res.json()) as { jobs: Array<{ status: string }> };
    return jobs.length === 3 && jobs.every((j) => j.status === "completed") ? true : undefined;
  });

  // A fresh profile, and Chromium's own temp files and HOME, inside one directory removed after.
  profileDir = await mkdtemp(join(tmpdir(), "refserver-chromium-"));
  await mkdir(join(profileDir, "tmp"));
  browser = await puppeteer.launch({
    executablePath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${join(profileDir, "profile")}`,
    ],
    env: { ...process.env, TMPDIR: join(profileDir, "tmp"), HOME: profileDir },
    timeout: 30_000,
  });
  page = await browser.newPage();
  page.on("dialog", (dialog) => {
    dialogs.push(dialog.message());
    void dialog.dismiss();
  });
}

afterAll(async () => {
  await browser?.close();
  if (profileDir) await rm(profileDir, { recursive: true, force: true, maxRetries: 5 });
  if (server && server.child.exitCode === null) {
    server.child.kill("SIGTERM");
    await server.exited;
  }
  await removeTempDirs();
});

describe("the web pages in headless Chromium", () => {
  it("the dialog watch works (a control page that does call alert)", async () => {
    const control = await browser!.newPage();
    control.on("dialog", (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    await control.setContent("<script>alert('control')</script>");
    await waitFor(() => (dialogs.includes("control") ? true : undefined), 5_000);
    await control.close();
    dialogs.length = 0;
  });

  it("an anonymous visitor gets the login page only", async () => {
    await visit("/");
    expect(new URL(page.url()).pathname).toBe("/login");
    expect(new URL(page.url()).searchParams.get("next")).toBe("/");
    expect(await page.$("form[action='/login'] input[name=password]")).not.toBeNull();
    const content = await page.content();
    for (const title of [PLAIN_TITLE, CJK_TITLE, "alert(1)"]) expect(content).not.toContain(title);
    await visit(`/paper/${docIds.plain}`);
    expect(new URL(page.url()).pathname).toBe("/login");
    const pdf = await page.goto(`${base}/download/pdf/${docIds.plain}`);
    expect(pdf?.status()).toBe(401);
  });

  it("logs in through the form: an HttpOnly, SameSite=Lax session cookie; the library lists every title", async () => {
    await visit("/login");
    await page.type("#username", ADMIN.user);
    await page.type("#password", "wrong password");
    await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("button[type=submit]")]);
    expect(await page.$eval("[role=alert]", (e) => e.textContent)).toContain("Invalid username or password");

    await page.$eval("#password", (e) => ((e as unknown as FormField).value = ""));
    await page.type("#password", ADMIN.password);
    await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("button[type=submit]")]);
    expect(new URL(page.url()).pathname).toBe("/");
    const cookies = await browser!.cookies();
    const session = cookies.find((c) => c.name === "refserver_session");
    expect(session).toMatchObject({ httpOnly: true, sameSite: "Lax", path: "/", secure: false });
    expect(await page.evaluate(() => document.cookie)).toBe(""); // HttpOnly: scripts cannot read it

    // Newest first, with authors, year, Zotero key and status.
    expect(await textOf("#papers a.title")).toEqual([CJK_TITLE, SCRIPT_TITLE, PLAIN_TITLE]);
    const firstRow = (await textOf("#papers tbody tr:first-child td")).map((t) => t.trim());
    expect(firstRow.slice(1)).toEqual(["Ada Lovelace, 山田 太郎", "2021", "CJK00001", "completed"]);
    expect(await page.$eval("#summary", (e) => e.textContent)).toContain("3 papers");
  });

  it("shows the markup title as text: no script element, no dialog, with or without the CSP", async () => {
    const title = await page.$eval(`tr[data-doc-id="${docIds.script}"] a.title`, (a) => ({ text: a.textContent, children: a.children.length }));
    expect(title).toEqual({ text: SCRIPT_TITLE, children: 0 });
    expect(await page.evaluate(() => document.querySelectorAll("script").length)).toBe(0);
    // Without the Content-Security-Policy only the escaping stands between the title and a script.
    const bare = await browser!.newPage();
    bare.on("dialog", (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    await bare.setBypassCSP(true);
    await bare.goto(`${base}/`, { waitUntil: "load" });
    await bare.goto(`${base}/paper/${docIds.script}`, { waitUntil: "load" });
    expect(await bare.$eval("#title", (h) => h.textContent)).toBe(SCRIPT_TITLE);
    expect(await bare.evaluate(() => document.querySelectorAll("script").length)).toBe(0);
    await bare.close();
    expect(dialogs).toEqual([]);
  });

  it("search filters the list: a word of one paper's page text, a CJK word of a title", async () => {
    await visit("/");
    await page.type("input[name=q]", TEXT_WORD);
    await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.keyboard.press("Enter")]);
    expect(new URL(page.url()).searchParams.get("q")).toBe(TEXT_WORD);
    expect(await textOf("#papers a.title")).toEqual([PLAIN_TITLE]);
    expect(await textOf("#papers mark")).toContain(TEXT_WORD);
    expect(await page.$eval("#papers .snippet", (e) => e.textContent)).toContain(`An ${TEXT_WORD} winds between the drumlins.`);

    await page.$eval("input[name=q]", (e) => ((e as unknown as FormField).value = ""));
    await page.type("input[name=q]", "海面");
    await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.keyboard.press("Enter")]);
    expect(await textOf("#papers a.title")).toEqual([CJK_TITLE]);

    await page.$eval("input[name=q]", (e) => ((e as unknown as FormField).value = ""));
    await page.type("input[name=q]", "nothing-like-this");
    await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.keyboard.press("Enter")]);
    expect(await page.$("#papers")).toBeNull();
    expect(await page.content()).toContain("No paper matches.");
  });

  it("opens a paper: metadata, processing steps, the first page's text", async () => {
    await visit(`/?q=${TEXT_WORD}`);
    await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("#papers a.title")]);
    expect(new URL(page.url()).pathname).toBe(`/paper/${docIds.plain}`);
    expect(await page.$eval("#title", (e) => e.textContent)).toBe(PLAIN_TITLE);
    expect(await page.$eval("#authors", (e) => e.textContent)).toBe("Ada Lovelace, 山田 太郎");
    expect(await textOf("#steps tbody tr td:nth-child(2)")).toEqual(["completed", "completed"]);
    const firstPage = await page.$eval("#first-page", (e) => e.textContent ?? "");
    expect(firstPage).toContain(`An ${TEXT_WORD} winds between the drumlins.`);
    expect(firstPage).not.toContain("Second page.");
  });

  it("downloads the PDF with the session cookie: the saved bytes have the uploaded PDF's md5", async () => {
    const downloads = join(profileDir!, "downloads");
    await mkdir(downloads);
    const cdp: CDPSession = await browser!.target().createCDPSession();
    const done = new Promise<{ guid: string; state: string }>((resolve) => {
      cdp.on("Browser.downloadProgress", (e: { guid: string; state: string }) => {
        if (e.state === "completed" || e.state === "canceled") resolve(e);
      });
    });
    await cdp.send("Browser.setDownloadBehavior", { behavior: "allowAndName", downloadPath: downloads, eventsEnabled: true });
    await page.click("#download");
    const finished = await done;
    expect(finished.state).toBe("completed");
    const saved = await readFile(join(downloads, finished.guid));
    expect(saved.subarray(0, 5).toString("latin1")).toBe("%PDF-");
    expect(md5(saved)).toBe(md5(papers.plain));
    expect(await readdir(downloads)).toEqual([finished.guid]);
    await cdp.detach();
  });

  it("the jobs page lists the jobs with progress and reloads itself", async () => {
    await visit("/jobs");
    expect(await page.$eval('meta[http-equiv="refresh"]', (m) => m.getAttribute("content"))).toBe("5");
    expect((await textOf("#jobs tbody tr td:first-child")).sort()).toEqual([CJK_TITLE, PLAIN_TITLE, SCRIPT_TITLE].sort());
    expect(await page.$$eval("#jobs progress", (ps) => ps.map((p) => (p as unknown as { value: number }).value))).toEqual([100, 100, 100]);
  });

  it("takes a screenshot of the library: a PNG of some size", async () => {
    await visit("/");
    const shot = join(profileDir!, "library.png");
    await page.screenshot({ path: shot, fullPage: true });
    const bytes = await readFile(shot);
    expect(bytes.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
    expect((await stat(shot)).size).toBeGreaterThan(10_000);
  });

  it("logs out: the session ends and the pages need a login again", async () => {
    await visit("/");
    await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("form[action='/logout'] button")]);
    expect(new URL(page.url()).pathname).toBe("/login");
    expect((await browser!.cookies()).find((c) => c.name === "refserver_session")).toBeUndefined();
    await visit("/jobs");
    expect(new URL(page.url()).pathname).toBe("/login");
    expect(dialogs).toEqual([]);
  });
});

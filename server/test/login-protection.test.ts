import type { FastifyInstance } from "fastify";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";

interface ScryptCall {
  keylen: number;
  saltBytes: number;
  N: number | undefined;
  r: number | undefined;
  p: number | undefined;
}
const { scryptCalls } = vi.hoisted(() => ({ scryptCalls: [] as ScryptCall[] }));
vi.mock("node:crypto", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:crypto")>();
  const scrypt = ((password: string, salt: Buffer, keylen: number, options: import("node:crypto").ScryptOptions, callback: (err: Error | null, key: Buffer) => void) => {
    scryptCalls.push({ keylen, saltBytes: salt.length, N: options.N, r: options.r, p: options.p });
    actual.scrypt(password, salt, keylen, options, callback);
  }) as typeof actual.scrypt;
  return { ...actual, default: { ...actual, scrypt }, scrypt };
});
// The suite runs test files in shared workers (isolate: false, vitest.config.ts): the server's
// modules may already be loaded there with the real node:crypto. Dropping the worker's module
// cache and importing them after the mock makes them take the mocked one.
vi.resetModules();
const { hashPassword } = await import("../src/auth.js");
const { LoginLimiter } = await import("../src/login-limiter.js");
const { ADMIN, removeTempDirs, tempDataDir, testApp } = await import("./helpers/app.js");
const { spawnServer } = await import("./helpers/process.js");
type ServerProcess = import("./helpers/process.js").ServerProcess;

const apps: FastifyInstance[] = [];
const servers: ServerProcess[] = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
  for (const s of servers.splice(0)) {
    if (s.child.exitCode === null) s.child.kill("SIGTERM");
    await s.exited;
  }
});
afterAll(removeTempDirs);

/** An app whose login limiter reads `clock.now` (milliseconds), moved by the test. */
async function clockedApp(overrides: Parameters<typeof testApp>[0] = {}): Promise<{ app: FastifyInstance; clock: { now: number } }> {
  const clock = { now: 1_700_000_000_000 };
  const app = await testApp({ now: () => clock.now, ...overrides });
  apps.push(app);
  return { app, clock };
}

function attempt(app: FastifyInstance, username: string, password: string, ip = "203.0.113.1") {
  return app.inject({
    method: "POST",
    url: "/api/v1/auth/login",
    remoteAddress: ip,
    headers: { "content-type": "application/x-www-form-urlencoded" },
    payload: new URLSearchParams({ username, password }).toString(),
  });
}

describe("failed logins are rate limited per address and per username", () => {
  it("per address: the 11th attempt within a minute is 429 with Retry-After, even with the right password; other addresses are not held", async () => {
    const { app, clock } = await clockedApp();
    for (let i = 0; i < 10; i++) {
      const res = await attempt(app, `guess${i}`, "wrong", "203.0.113.9");
      expect(res.statusCode, `failure ${i + 1}`).toBe(401);
      clock.now += 1000;
    }
    const held = await attempt(app, ADMIN.user, ADMIN.password, "203.0.113.9");
    expect(held.statusCode).toBe(429);
    // The first failure leaves the window 60 s after it was made: 50 s from now.
    expect(held.headers["retry-after"]).toBe("50");
    expect(held.json()).toEqual({ detail: "Too many failed logins from this address: try again in 50 seconds" });
    // Another address logs in: the per-address limit holds only the guessing address.
    expect((await attempt(app, ADMIN.user, ADMIN.password, "198.51.100.4")).statusCode).toBe(200);
    // Attempts refused with 429 do not count: waiting always ends the block.
    clock.now += 30_000;
    const still = await attempt(app, ADMIN.user, ADMIN.password, "203.0.113.9");
    expect(still.statusCode).toBe(429);
    expect(still.headers["retry-after"]).toBe("20");
    clock.now += 20_000;
    expect((await attempt(app, ADMIN.user, ADMIN.password, "203.0.113.9")).statusCode).toBe(200);
  });

  it("per username: 5 failures for one user from 5 addresses hold that user (429) but not another user; a success later", async () => {
    const { app, clock } = await clockedApp();
    await app.refserver.repo.createUser("ops", await hashPassword("ops password"), true);
    for (let i = 0; i < 5; i++) expect((await attempt(app, ADMIN.user, "wrong", `192.0.2.${i}`)).statusCode).toBe(401);
    const held = await attempt(app, ADMIN.user, ADMIN.password, "192.0.2.200");
    expect(held.statusCode).toBe(429);
    expect(held.headers["retry-after"]).toBe("60");
    expect(held.json()).toEqual({ detail: "Too many failed logins for this username: try again in 60 seconds" });
    // Other users' failures never block a login (from an address under its own limit).
    expect((await attempt(app, "ops", "ops password", "192.0.2.0")).statusCode).toBe(200);
    clock.now += 60_001;
    expect((await attempt(app, ADMIN.user, ADMIN.password, "192.0.2.200")).statusCode).toBe(200);
  });

  it("unknown usernames are counted the same way as known ones (the limit tells nothing about who exists)", async () => {
    const { app } = await clockedApp();
    for (let i = 0; i < 5; i++) await attempt(app, "nobody", "x", `192.0.2.${i}`);
    const held = await attempt(app, "nobody", "x", "192.0.2.100");
    expect(held.statusCode).toBe(429);
    expect(held.json()).toEqual({ detail: "Too many failed logins for this username: try again in 60 seconds" });
  });

  it("a success clears the username's failures (not the address's)", async () => {
    const { app } = await clockedApp();
    for (let i = 0; i < 4; i++) expect((await attempt(app, ADMIN.user, "wrong")).statusCode).toBe(401);
    expect((await attempt(app, ADMIN.user, ADMIN.password)).statusCode).toBe(200);
    for (let i = 0; i < 4; i++) expect((await attempt(app, ADMIN.user, "wrong")).statusCode).toBe(401);
    // 8 failures from this address so far, under its limit of 10; the username's count restarted.
    expect((await attempt(app, ADMIN.user, ADMIN.password)).statusCode).toBe(200);
    expect((await attempt(app, "someone", "wrong")).statusCode).toBe(401);
    expect((await attempt(app, "someone", "wrong")).statusCode).toBe(401);
    expect((await attempt(app, ADMIN.user, ADMIN.password)).statusCode).toBe(429);
  });

  it("limits are configurable; 0 turns one off", async () => {
    const { app } = await clockedApp({ loginLimits: { maxFailuresPerIp: 2, maxFailuresPerUser: 0, windowMs: 5000 } });
    expect((await attempt(app, ADMIN.user, "wrong")).statusCode).toBe(401);
    expect((await attempt(app, ADMIN.user, "wrong")).statusCode).toBe(401);
    const held = await attempt(app, ADMIN.user, ADMIN.password);
    expect(held.statusCode).toBe(429);
    expect(held.headers["retry-after"]).toBe("5");
    const { app: open } = await clockedApp({ loginLimits: { maxFailuresPerIp: 0, maxFailuresPerUser: 0 } });
    for (let i = 0; i < 30; i++) expect((await attempt(open, ADMIN.user, "wrong")).statusCode).toBe(401);
    expect((await attempt(open, ADMIN.user, ADMIN.password)).statusCode).toBe(200);
  });

  it("the limiter keeps only the failures that count, and hashes long usernames into its keys", () => {
    let now = 0;
    const limiter = new LoginLimiter({ maxFailuresPerIp: 3, maxFailuresPerUser: 2, windowMs: 1000 }, () => now);
    const long = "u".repeat(60_000);
    limiter.fail("a", long);
    limiter.fail("a", long);
    expect(limiter.check("b", long)).toEqual({ scope: "user", retryAfterSeconds: 1 });
    expect(limiter.check("b", "u".repeat(59_999))).toBeUndefined();
    now = 1001;
    expect(limiter.check("a", long)).toBeUndefined();
    expect(limiter.size).toBe(0); // expired entries are dropped
  });

  it("the CLI flags set the limits (--login-ip-failures, --login-window-s)", async () => {
    const server = spawnServer(["--data", await tempDataDir(), "--no-worker", "--login-ip-failures", "2", "--login-window-s", "30"], {
      REFSERVER_ADMIN_USER: ADMIN.user,
      REFSERVER_ADMIN_PASSWORD: ADMIN.password,
    });
    servers.push(server);
    const url = await server.url;
    const post = (password: string) =>
      fetch(`${url}/api/v1/auth/login`, { method: "POST", body: new URLSearchParams({ username: ADMIN.user, password }) });
    expect((await post("wrong")).status).toBe(401);
    expect((await post("wrong")).status).toBe(401);
    const held = await post(ADMIN.password);
    expect(held.status).toBe(429);
    expect(Number(held.headers.get("retry-after"))).toBeGreaterThan(25);
    expect(Number(held.headers.get("retry-after"))).toBeLessThanOrEqual(30);
  });
});

describe("an unknown user costs the same work as a known one", () => {
  // Equal work, counted rather than timed (a timing would depend on the machine's load): every
  // login derives exactly one scrypt key with the same cost parameters, whether the user exists
  // or not. The hashing primitive is observed where the server calls it (node:crypto's scrypt).
  it("one scrypt of the same cost (N, r, p, key and salt length) for an unknown user as for a known user's wrong password", async () => {
    const { app } = await clockedApp({ loginLimits: { maxFailuresPerIp: 0, maxFailuresPerUser: 0 } });
    const workOf = async (username: string): Promise<ScryptCall[]> => {
      scryptCalls.length = 0;
      const res = await attempt(app, username, "not the password");
      expect(res.statusCode).toBe(401);
      expect(res.json()).toEqual({ detail: "Invalid credentials" });
      return [...scryptCalls];
    };
    const known = await workOf(ADMIN.user);
    const unknown = await workOf("nobody-at-all");
    expect(known).toHaveLength(1);
    expect(unknown).toEqual(known);
    // The control: the known user's right password goes through the same one derivation.
    scryptCalls.length = 0;
    expect((await attempt(app, ADMIN.user, ADMIN.password)).statusCode).toBe(200);
    expect(scryptCalls).toEqual(known);
  });
});

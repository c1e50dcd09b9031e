import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from "node:crypto";
import { link, open, readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import { SignJWT, jwtVerify, errors as joseErrors } from "jose";

const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 64 } as const;

function scrypt(password: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(password, salt, keylen, { ...opts, maxmem: 64 * 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

/** `scrypt$N$r$p$salt$hash`, base64 parts. */
export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, SCRYPT.keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p });
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString("base64")}$${key.toString("base64")}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt") return false;
  const [, n, r, p, saltB64, hashB64] = parts;
  const expected = Buffer.from(hashB64 ?? "", "base64");
  if (expected.length === 0) return false;
  const key = await scrypt(password, Buffer.from(saltB64 ?? "", "base64"), expected.length, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
  });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/**
 * Stands in for the stored hash of a user that does not exist: same scrypt parameters and key
 * length as a real one, a random expected key no password yields. Checking a password against it
 * costs what a real check costs, so the answer's timing does not tell whether a username exists.
 */
const DUMMY_HASH = `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${randomBytes(16).toString("base64")}$${randomBytes(SCRYPT.keylen).toString("base64")}`;

/**
 * Check a password against a user's stored hash, or, for an unknown user (`stored` undefined),
 * do the same work against a dummy hash and answer false.
 */
export async function verifyPasswordConstantWork(password: string, stored: string | undefined): Promise<boolean> {
  const ok = await verifyPassword(password, stored ?? DUMMY_HASH);
  return stored !== undefined && ok;
}

export function randomPassword(): string {
  return randomBytes(18).toString("base64url");
}

/** Token lifetime of the original server: 480 minutes. */
export const TOKEN_TTL_SECONDS = 480 * 60;

/**
 * Load the HS256 secret from `<dataDir>/jwt-secret`, creating it (mode 0600) on first start.
 * Several server processes sharing the data directory (PostgreSQL) share the secret, so a token
 * one issues the others accept. Created race-free: written whole to a temp name, fsynced, then
 * hard-linked to its name (fails if another process got there first, whose secret is then read).
 */
export async function loadOrCreateSecret(dataDir: string): Promise<Uint8Array> {
  const path = join(dataDir, "jwt-secret");
  const temp = join(dataDir, `.jwt-secret.${process.pid}.${randomBytes(6).toString("hex")}`);
  try {
    await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    const fh = await open(temp, "wx", 0o600);
    try {
      await fh.writeFile(randomBytes(32).toString("hex") + "\n");
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(temp, path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    } finally {
      await unlink(temp).catch(() => undefined);
    }
  }
  const hex = (await readFile(path, "utf8")).trim();
  if (!/^[0-9a-f]{64,}$/i.test(hex)) throw new Error(`${path} does not hold a hex secret`);
  return Buffer.from(hex, "hex");
}

export class TokenService {
  private readonly secret: Uint8Array;
  private readonly ttlSeconds: number;

  constructor(secret: Uint8Array, ttlSeconds: number = TOKEN_TTL_SECONDS) {
    this.secret = secret;
    this.ttlSeconds = ttlSeconds;
  }

  async issue(username: string): Promise<string> {
    const nowSec = Math.floor(Date.now() / 1000);
    return new SignJWT({})
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(username)
      .setIssuedAt(nowSec)
      .setExpirationTime(nowSec + this.ttlSeconds)
      .sign(this.secret);
  }

  /** The username in a valid, unexpired token; undefined otherwise. */
  async verify(token: string): Promise<string | undefined> {
    try {
      const { payload } = await jwtVerify(token, this.secret, { algorithms: ["HS256"] });
      return typeof payload.sub === "string" ? payload.sub : undefined;
    } catch (err) {
      if (err instanceof joseErrors.JOSEError) return undefined;
      throw err;
    }
  }
}

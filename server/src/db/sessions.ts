/**
 * Browser sessions of the web pages, stored server-side in the `session` table (migration 2).
 * The cookie holds a random 256-bit id; the table holds only its SHA-256, so a copy of the
 * database (a backup) opens no session. Each session has its own CSRF token for the forms.
 */
import { createHash, randomBytes } from "node:crypto";
import type { Statement } from "better-sqlite3";
import { writeTransaction, type SqliteDatabase } from "./connection.js";
import type { SessionStore, WebSession } from "./types.js";

export type { WebSession } from "./types.js";

/** The stored form of a session id: its SHA-256 (hex). */
export function hashId(id: string): string {
  return createHash("sha256").update(id, "utf8").digest("hex");
}

/** 32 random bytes, base64url (43 characters). */
export function randomToken(): string {
  return randomBytes(32).toString("base64url");
}

export class SqliteSessionStore implements SessionStore {
  private readonly db: SqliteDatabase;
  private readonly ttlMs: number;
  private readonly now: () => number;
  private readonly statements = new Map<string, Statement>();

  constructor(db: SqliteDatabase, ttlMs: number, now: () => number = Date.now) {
    this.db = db;
    this.ttlMs = ttlMs;
    this.now = now;
  }

  /** The statement for `sql`, prepared on first use and kept for the connection's life. */
  private q(sql: string): Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  /** The session's lifetime in seconds (the cookie's Max-Age). */
  get ttlSeconds(): number {
    return Math.floor(this.ttlMs / 1000);
  }

  /** A new session for `username` (expired ones are purged in the same transaction). */
  async create(username: string): Promise<WebSession & { id: string }> {
    const id = randomToken();
    const csrfToken = randomToken();
    const t = this.now();
    const expiresAt = t + this.ttlMs;
    writeTransaction(this.db, () => {
      this.q("DELETE FROM session WHERE expires_at <= ?").run(t);
      this.q("INSERT INTO session (id_hash, username, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
        .run(hashId(id), username, csrfToken, new Date(t).toISOString(), expiresAt);
    });
    return { id, username, csrfToken, expiresAt };
  }

  /**
   * The live session with this id: not expired, and its user still exists and is an admin
   * (as for a bearer token). Undefined otherwise.
   */
  async find(id: string): Promise<WebSession | undefined> {
    if (id === "" || id.length > 200) return undefined;
    const row = this.q(
      `SELECT s.username, s.csrf_token, s.expires_at FROM session s JOIN user u ON u.username = s.username
       WHERE s.id_hash = ? AND s.expires_at > ? AND u.is_admin = 1`,
    ).get(hashId(id), this.now()) as { username: string; csrf_token: string; expires_at: number } | undefined;
    return row ? { username: row.username, csrfToken: row.csrf_token, expiresAt: row.expires_at } : undefined;
  }

  /** End a session (logout). True when it existed. */
  async delete(id: string): Promise<boolean> {
    return this.q("DELETE FROM session WHERE id_hash = ?").run(hashId(id)).changes > 0;
  }

  /** How many sessions are stored, expired ones included (tests). */
  async count(): Promise<number> {
    return (this.q("SELECT COUNT(*) AS n FROM session").get() as { n: number }).n;
  }
}

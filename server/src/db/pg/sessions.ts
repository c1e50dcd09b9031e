/** The PostgreSQL implementation of `SessionStore` (types.ts); see db/sessions.ts for the design. */
import type pg from "pg";
import { hashId, randomToken } from "../sessions.js";
import type { SessionStore, WebSession } from "../types.js";
import { one, query, transaction } from "./client.js";

export class PgSessionStore implements SessionStore {
  private readonly pool: pg.Pool;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(pool: pg.Pool, ttlMs: number, now: () => number = Date.now) {
    this.pool = pool;
    this.ttlMs = ttlMs;
    this.now = now;
  }

  get ttlSeconds(): number {
    return Math.floor(this.ttlMs / 1000);
  }

  async create(username: string): Promise<WebSession & { id: string }> {
    const id = randomToken();
    const csrfToken = randomToken();
    const t = this.now();
    const expiresAt = t + this.ttlMs;
    await transaction(this.pool, async (c) => {
      await query(c, "DELETE FROM session WHERE expires_at <= $1", [t]);
      await query(c, "INSERT INTO session (id_hash, username, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)", [
        hashId(id),
        username,
        csrfToken,
        new Date(t).toISOString(),
        expiresAt,
      ]);
    });
    return { id, username, csrfToken, expiresAt };
  }

  async find(id: string): Promise<WebSession | undefined> {
    if (id === "" || id.length > 200) return undefined;
    const row = await one<{ username: string; csrf_token: string; expires_at: number }>(
      this.pool,
      `SELECT s.username, s.csrf_token, s.expires_at FROM session s JOIN "user" u ON u.username = s.username
       WHERE s.id_hash = $1 AND s.expires_at > $2 AND u.is_admin = 1`,
      [hashId(id), this.now()],
    );
    return row ? { username: row.username, csrfToken: row.csrf_token, expiresAt: row.expires_at } : undefined;
  }

  async delete(id: string): Promise<boolean> {
    return ((await query(this.pool, "DELETE FROM session WHERE id_hash = $1", [hashId(id)])).rowCount ?? 0) > 0;
  }

  async count(): Promise<number> {
    return (await one<{ n: number }>(this.pool, "SELECT COUNT(*) AS n FROM session"))?.n ?? 0;
  }
}

/**
 * Open a PostgreSQL storage: migrate, then two pools (requests, and the worker's own, as with
 * SQLite's two connections) and one connection that holds a shared advisory lock while this
 * process runs, so a starting process can tell whether any other server uses the database.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Storage } from "../types.js";
import { makeClient, makePool } from "./client.js";
import { PgLibrary } from "./library.js";
import { migratePostgres } from "./migrations.js";
import { PgRepository } from "./repository.js";
import { PgSessionStore } from "./sessions.js";

/** Key of the advisory lock every running server holds shared ("rsrun"). */
const RUNNING_LOCK = 0x727372756e;
/** Keep in step with cli.ts. */
export const DEFAULT_JOB_LEASE_MS = 60_000;

export interface PostgresOptions {
  url: string;
  sessionTtlMs: number;
  now?: (() => number) | undefined;
  jobLeaseMs?: number | undefined;
  /** Connections for requests. Default 10. */
  poolSize?: number;
}

export async function openPostgres(options: PostgresOptions): Promise<Storage> {
  const pool = makePool({ url: options.url, max: options.poolSize ?? 10, applicationName: "refserver-lite" });
  const workerPool = makePool({ url: options.url, max: 2, applicationName: "refserver-lite worker" });
  const presence = makeClient(options.url, "refserver-lite presence");
  presence.on("error", () => undefined);
  const closeAll = async (): Promise<void> => {
    await presence.end().catch(() => undefined);
    await workerPool.end().catch(() => undefined);
    await pool.end().catch(() => undefined);
  };
  let alone: boolean;
  try {
    const client = await pool.connect();
    try {
      await migratePostgres(client);
    } finally {
      client.release();
    }
    await presence.connect();
    // Exclusive when no other server holds the lock shared: then this one is alone, and keeps
    // the exclusive lock through its startup sweep so no other process starts meanwhile.
    const { rows } = await presence.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1) AS ok", [RUNNING_LOCK]);
    alone = rows[0]?.ok === true;
  } catch (err) {
    await closeAll();
    throw err;
  }
  const owner = `${hostname()}:${process.pid}:${randomBytes(4).toString("hex")}`;
  const leaseMs = options.jobLeaseMs ?? DEFAULT_JOB_LEASE_MS;
  const workerRepo = new PgRepository(workerPool, { owner, leaseMs });
  let closed = false;
  return {
    kind: "postgres",
    repo: new PgRepository(pool, { owner, leaseMs }),
    workerRepo,
    library: new PgLibrary(pool),
    sessions: new PgSessionStore(pool, options.sessionTtlMs, options.now),
    aloneAtStart: alone,
    startedServing: async () => {
      await presence.query("SELECT pg_advisory_lock_shared($1)", [RUNNING_LOCK]);
      if (alone) await presence.query("SELECT pg_advisory_unlock($1)", [RUNNING_LOCK]);
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await workerRepo.releaseLeases().catch(() => undefined);
      await closeAll();
    },
  };
}


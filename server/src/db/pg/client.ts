/**
 * The PostgreSQL connection layer: pools, named (prepared once per connection) statements,
 * short transactions, and error codes.
 */
import { createHash } from "node:crypto";
import pg from "pg";

/** 64-bit integers (COUNT(*), BIGINT columns) as numbers: every value we store fits in 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: "text" | "binary") => {
    if (oid === 20 && format !== "binary") return (v: string) => Number(v);
    return format === "binary" ? pg.types.getTypeParser(oid, "binary") : pg.types.getTypeParser(oid, "text");
  }) as pg.CustomTypesConfig["getTypeParser"],
};

export interface PoolOptions {
  url: string;
  max: number;
  applicationName: string;
}

export function makePool(options: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.max,
    application_name: options.applicationName,
    types,
    connectionTimeoutMillis: 10_000,
  });
  // An idle connection that the server closed (a restart): the pool drops it and opens another.
  pool.on("error", () => undefined);
  return pool;
}

export function makeClient(url: string, applicationName: string): pg.Client {
  return new pg.Client({ connectionString: url, application_name: applicationName, types, connectionTimeoutMillis: 10_000 });
}

/** Anything that runs a query: the pool or one checked-out connection (inside a transaction). */
export type Queryable = pg.Pool | pg.PoolClient;

const names = new Map<string, string>();

/** A statement's name, from its text: PostgreSQL prepares it once per connection and reuses it. */
function nameOf(text: string): string {
  let name = names.get(text);
  if (!name) {
    name = `rs_${createHash("sha1").update(text).digest("hex").slice(0, 20)}`;
    names.set(text, name);
  }
  return name;
}

export async function query<R extends pg.QueryResultRow>(db: Queryable, text: string, values: unknown[] = []): Promise<pg.QueryResult<R>> {
  return db.query<R>({ name: nameOf(text), text, values });
}

export async function rows<R extends pg.QueryResultRow>(db: Queryable, text: string, values: unknown[] = []): Promise<R[]> {
  return (await query<R>(db, text, values)).rows;
}

export async function one<R extends pg.QueryResultRow>(db: Queryable, text: string, values: unknown[] = []): Promise<R | undefined> {
  return (await query<R>(db, text, values)).rows[0];
}

/**
 * Run `fn` in one transaction on one connection (READ COMMITTED; the statements take the row
 * locks they need with FOR UPDATE). Rolled back on any error; a connection that broke is dropped.
 */
export async function transaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query("BEGIN");
    const result = await fn(client);
    await client.query("COMMIT");
    return result;
  } catch (err) {
    await client.query("ROLLBACK").catch((e: unknown) => {
      broken = e as Error;
    });
    throw err;
  } finally {
    client.release(broken);
  }
}

/** PostgreSQL's SQLSTATE of an error, if it has one. */
export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

export const UNIQUE_VIOLATION = "23505";
export const DISK_FULL = "53100";

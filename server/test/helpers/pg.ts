/**
 * PostgreSQL for the tests: the real server at 127.0.0.1:5432 (trust authentication, user
 * postgres), a fresh database per test file and run (`refserver_test_<pid>_<random>`), dropped
 * after. Each app gets its own schema in it (search_path), so tests stay independent without a
 * database each. When no PostgreSQL answers, the PostgreSQL tests are skipped with one line
 * saying so, unless REFSERVER_TEST_REQUIRE_PG=1 (CI), where that is a failure.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";

export const PG_ADMIN_URL = process.env.REFSERVER_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export interface TestDatabase {
  /** The database's URL (public schema). */
  url: string;
  name: string;
  /** A URL whose search_path is a new, empty schema of this database. */
  freshSchema(): Promise<string>;
  /** Rows of a query on the schema of `url` (`$1` parameters). */
  query<R extends pg.QueryResultRow>(url: string, sql: string, params?: unknown[]): Promise<R[]>;
  drop(): Promise<void>;
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** A fresh database, or undefined (one line printed) when PostgreSQL is not reachable. */
export async function testDatabase(who: string): Promise<TestDatabase | undefined> {
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 3000 });
  try {
    await admin.connect();
  } catch (err) {
    await admin.end().catch(() => undefined);
    const what = `PostgreSQL not reachable at ${new URL(PG_ADMIN_URL).host} (${(err as Error).message})`;
    if (process.env.REFSERVER_TEST_REQUIRE_PG === "1") throw new Error(`${what}, and REFSERVER_TEST_REQUIRE_PG=1 requires it`);
    console.log(`${what}: the PostgreSQL tests of ${who} are skipped`);
    return undefined;
  }
  const name = `refserver_test_${process.pid}_${randomBytes(4).toString("hex")}`;
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = withDatabase(PG_ADMIN_URL, name);
  const setup = new pg.Client({ connectionString: url });
  await setup.connect();
  let schemas = 0;
  return {
    url,
    name,
    async freshSchema() {
      const schema = `t${++schemas}`;
      await setup.query(`CREATE SCHEMA ${schema}`);
      const u = new URL(url);
      u.searchParams.set("options", `-c search_path=${schema},public`);
      return u.toString();
    },
    async query<R extends pg.QueryResultRow>(schemaUrl: string, sql: string, params: unknown[] = []) {
      const c = new pg.Client({ connectionString: schemaUrl });
      await c.connect();
      try {
        return (await c.query<R>(sql, params)).rows;
      } finally {
        await c.end();
      }
    },
    async drop() {
      await setup.end().catch(() => undefined);
      const a = new pg.Client({ connectionString: PG_ADMIN_URL });
      await a.connect();
      try {
        await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}

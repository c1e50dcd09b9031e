import { FakeRefServer, type FakeRefServerOptions } from "./fake-refserver.js";
import { FakeZotero, makeLibrary, type FakeLibrary, type FakeZoteroOptions, type MakeLibraryOptions } from "../../fixtures/fake-zotero.js";
import { makeSandbox, removeSandbox, type Sandbox, type SandboxOptions } from "./cli.js";

export interface World {
  library: FakeLibrary;
  zotero: FakeZotero;
  refserver: FakeRefServer;
  sandbox: Sandbox;
  zoteroUrl: string;
  refserverUrl: string;
  /** Stop both servers, then remove the sandbox directory (killing any CLI still running in it). */
  close(): Promise<void>;
}

export interface WorldOptions {
  library?: MakeLibraryOptions | FakeLibrary;
  /** FakeZotero's own options (a separate storage origin, lying counts, no Link header, …). */
  zotero?: Omit<FakeZoteroOptions, "library">;
  /** Add more items to the library before the servers start. */
  build?: (library: FakeLibrary) => void;
  refserver?: FakeRefServerOptions;
  sandbox?: Partial<Omit<SandboxOptions, "zoteroUrl" | "refserverUrl" | "libraryId" | "apiKey">>;
}

export const API_KEY = "zk-TEST-SECRET-0123456789";
export const PASSWORD = "pw-TEST-SECRET-987";

/** A fake Zotero, a fake RefServer and a CLI sandbox wired to both, all on 127.0.0.1. */
export async function makeWorld(o: WorldOptions = {}): Promise<World> {
  const library = isLibrary(o.library) ? o.library : makeLibrary({ apiKey: API_KEY, libraryId: 4242, ...o.library });
  o.build?.(library);
  const zotero = new FakeZotero({ library, ...o.zotero });
  const refserver = new FakeRefServer({ username: "admin", password: PASSWORD, ...o.refserver });
  const z = await zotero.start();
  const r = await refserver.start();
  const sandbox = makeSandbox({
    zoteroUrl: z.url,
    refserverUrl: r.url,
    libraryId: String(library.libraryId),
    libraryType: library.libraryType,
    apiKey: API_KEY,
    password: PASSWORD,
    ...o.sandbox,
  });
  return {
    library,
    zotero,
    refserver,
    sandbox,
    zoteroUrl: z.url,
    refserverUrl: r.url,
    close: async () => {
      await Promise.allSettled([z.close(), r.close()]);
      await removeSandbox(sandbox);
    },
  };
}

function isLibrary(value: WorldOptions["library"]): value is FakeLibrary {
  return typeof (value as FakeLibrary | undefined)?.pdfPairs === "function";
}

// Libraries for the benchmarks, built with the one fake Zotero (fixtures/fake-zotero.ts, compiled
// to bench/out/fakes by bench/tsconfig.json): N parents, each with one stored PDF whose file is on
// disk (the storage route streams it; one file may serve every item).
const { FakeLibrary, FakeZotero, makeZoteroKey, makeRng } = await import("../out/fixtures/fake-zotero.js");
const { FaultProxy } = await import("../out/fixtures/fault-proxy.js");
const { writePdfFile } = await import("../out/fixtures/pdf.js");

export { FakeLibrary, FakeZotero, FaultProxy, makeZoteroKey, makeRng, writePdfFile };

const TOPICS = ["Graph", "Entropy", "Lattice", "Sparse", "Quantum", "Fossil", "Protein", "Neural"];
const NOUNS = ["Methods", "Dynamics", "Networks", "Inference", "Structures", "Models"];

/**
 * `items` parents with one PDF each; `file(i)` → { path, size, md5 } (a file on disk).
 * Versions: parent i has startVersion + 2i + 1, its attachment + 2i + 2. metadata "full": each
 * item has a journal and a DOI (the importer sends the metadata call); "empty": neither.
 * Returns the library and, in order, { key, att, version, title } of every parent.
 */
export function diskLibrary({ items, file, libraryId = 475425, startVersion = 100, seed = 1, metadata = "full" }) {
  const lib = new FakeLibrary({ libraryId, startVersion, seed });
  const parents = [];
  // "empty": no journal, DOI or abstract (all the upload carries is all there is).
  const extra = metadata === "empty" ? { publicationTitle: "", DOI: "", abstractNote: "" } : undefined;
  for (let i = 0; i < items; i++) {
    const title = `${TOPICS[i % TOPICS.length]} ${NOUNS[i % NOUNS.length]} ${i + 1}`;
    const { parent, attachment } = lib.addParentWithFile(file(i), { title, ...(extra ? { extra } : {}), attachment: { filename: `paper-${i + 1}.pdf` } });
    parents.push({ key: parent.key, att: attachment.key, version: parent.version, title });
  }
  return { lib, parents };
}

/** Listing requests the fake has answered so far. */
export function listingRequests(zot) {
  return zot.listingRequestCount({ includeFaulted: true });
}

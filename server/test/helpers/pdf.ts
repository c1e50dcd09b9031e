// The repository's one PDF writer (fixtures/pdf.ts), for the server's tests.
export { deflateRepeated, makeBrokenPdf, makeInflatingPdf, makeSamplePdf, makeTestPdf } from "../../../fixtures/pdf.js";

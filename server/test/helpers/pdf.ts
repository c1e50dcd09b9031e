export { makeTestPdf, makeSamplePdf } from "../../src/testing/pdf-writer.js";

/** Starts like a PDF, is not one: the worker must fail its job, not crash. */
export function makeBrokenPdf(): Buffer {
  return Buffer.from("%PDF-1.4\nthis is not a pdf body at all\n%%EOF\n", "latin1");
}

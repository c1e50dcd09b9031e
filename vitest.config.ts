import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "server/test/**/*.test.ts"],
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // CLI and server tests spawn real processes; two cores, so keep the fan-out modest.
    maxWorkers: 2,
    // Points TMPDIR at a directory of this run's own and fails the run if a test leaves anything in it.
    globalSetup: ["test/global-setup.ts"],
  },
});

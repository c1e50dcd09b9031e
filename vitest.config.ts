import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "server/test/**/*.test.ts"],
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // CLI and server tests spawn real processes; two cores, so keep the fan-out modest.
    maxWorkers: 2,
    // Test files share their worker process (each still gets its own module graph only where it
    // asks for one: vi.resetModules()). Loading vite's transform, fastify, undici and the sources
    // once per worker instead of once per file saves about a quarter of the suite's CPU. Every
    // file cleans up what it starts (servers, processes, temp dirs, env), which this relies on.
    isolate: false,
    // Points TMPDIR at a directory of this run's own and fails the run if a test leaves anything in it.
    globalSetup: ["test/global-setup.ts"],
  },
});

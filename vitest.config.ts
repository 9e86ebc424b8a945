import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Forks, not threads: tests use native addons (koffi), child processes and process-wide state.
    pool: 'forks',
    // Two cores here: two test files at a time. Tests that spawn qemu-img, fio or a VM are I/O- and
    // process-bound, so more workers only add contention.
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});

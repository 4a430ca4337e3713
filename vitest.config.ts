import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Native ops use every core through their own thread pool; running test
    // files in parallel would only oversubscribe the machine.
    fileParallelism: false,
  },
});

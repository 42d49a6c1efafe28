import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const libs = ['protocol', 'blockmap', 'codec', 'stream', 'testing', 'hypervisor', 'nbd', 'service'];
const alias = Object.fromEntries(
  libs.map((name) => [`@wanmig/${name}`, fileURLToPath(new URL(`./libs/${name}/src/index.ts`, import.meta.url))]),
);

export default defineConfig({
  resolve: { alias },
  test: {
    projects: [
      {
        resolve: { alias },
        test: {
          name: 'unit',
          include: ['libs/**/*.spec.ts', 'apps/**/*.spec.ts'],
          testTimeout: 20_000,
          // expect.poll waits for a state, however late a loaded machine gets there: its limit only catches a hang
          // (vitest's default, 1 s, is a time limit a shared CI machine at load 8 can miss).
          expect: { poll: { timeout: 10_000 } },
        },
      },
      {
        resolve: { alias },
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          testTimeout: 180_000,
          hookTimeout: 60_000,
          // Integration suites start real nats-servers and time WAN behaviour: one file at a time on 2 cores.
          fileParallelism: false,
        },
      },
    ],
  },
});

#!/usr/bin/env node
import 'reflect-metadata';
import { WanmigError } from '@wanmig/protocol';
import { bootstrapService } from '@wanmig/service';
import { DELTA_APPLY_USAGE, resolveDeltaApplyConfig, type DeltaApplyConfig } from './delta-apply.config.js';
import { DeltaApplyModule } from './delta-apply.module.js';
import { DiskReceiverService } from './disk-receiver.service.js';
import { MemoryReceiverService } from './memory-receiver.service.js';

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

async function main(argv: string[]): Promise<number> {
  let config: DeltaApplyConfig;
  try {
    const parsed = resolveDeltaApplyConfig(argv);
    if (!parsed.config) {
      process.stdout.write(DELTA_APPLY_USAGE);
      return 0;
    }
    config = parsed.config;
  } catch (err) {
    process.stderr.write(`delta-apply: ${err instanceof Error ? err.message : String(err)}\n${DELTA_APPLY_USAGE}`);
    return EXIT_USAGE;
  }
  const app = await bootstrapService({
    module: DeltaApplyModule.forRoot(config),
    natsUrl: config.natsUrl,
    queue: `delta-apply.${config.site}`,
  });
  const sessions = app.get(DiskReceiverService).sessionCount;
  const memory = app.get(MemoryReceiverService).sessionCount;
  // One plain line that supervisors and tests wait for (migrations= counts disks, memory= RAM files).
  process.stdout.write(
    `delta-apply ready site=${config.site} nats=${config.natsUrl} data-dir=${config.dataDir} ` +
      `migrations=${sessions} memory=${memory}\n`,
  );
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0) process.exitCode = code;
  },
  (err: unknown) => {
    // A known failure (NATS unreachable, bad data dir) is one line; anything else keeps its stack.
    const text =
      err instanceof WanmigError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
    process.stderr.write(`delta-apply: ${text}\n`);
    process.exit(EXIT_FAILURE);
  },
);

#!/usr/bin/env node
/**
 * memory-precopy: the source side of memory migration. Attaches to a running VM through its
 * hypervisor driver and moves its memory and state to another site on request.
 *
 *   node dist/apps/memory-precopy/src/main.js [--nats URL] [--site NAME] [--runtime-dir DIR]
 *   (or WANMIG_NATS_URL, WANMIG_SITE, WANMIG_RUNTIME_DIR)
 */
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { bootstrapService, loadConfig } from '@wanmig/service';
import { MemoryPrecopyConfig } from './memory-precopy.config.js';
import { MemoryPrecopyModule } from './memory-precopy.module.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { nats: { type: 'string' }, site: { type: 'string' }, 'runtime-dir': { type: 'string' } },
    strict: true,
  });
  const config = loadConfig(MemoryPrecopyConfig, {
    ...process.env,
    ...(values.nats ? { WANMIG_NATS_URL: values.nats } : {}),
    ...(values.site ? { WANMIG_SITE: values.site } : {}),
    ...(values['runtime-dir'] ? { WANMIG_RUNTIME_DIR: values['runtime-dir'] } : {}),
  });
  const nc = await connect({
    servers: config.natsUrl,
    maxReconnectAttempts: -1,
    name: `memory-precopy.${config.site}`,
  });
  await bootstrapService({
    module: MemoryPrecopyModule.forRoot(config, nc),
    natsUrl: config.natsUrl,
    queue: `memory-precopy.${config.site}`,
  });
  // Nest's shutdown hooks (SIGTERM, SIGINT) stop the service: it aborts unfinished migrations and drains `nc`.
  process.stderr.write(`memory-precopy ready site=${config.site}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`memory-precopy: ${err instanceof Error ? err.message : String(err)}\n`);
  const usage = (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
  process.exit(usage ? 2 : 1);
});

#!/usr/bin/env node
/**
 * disk-transfer: the source side of storage migration. Serves disks over NBD while tracking every
 * write, and moves them to another site on request.
 *
 *   node dist/apps/disk-transfer/src/main.js [--nats URL] [--site NAME] [--data-dir DIR]
 *   (or WANMIG_NATS_URL, WANMIG_SITE, WANMIG_DATA_DIR)
 *   node dist/apps/disk-transfer/src/main.js serve --image PATH (--socket PATH | --port N) [--size SIZE]
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { bootstrapService, loadConfig, UnitError } from '@wanmig/service';
import { DiskTransferConfig } from './disk-transfer.config.js';
import { DiskTransferModule } from './disk-transfer.module.js';
import { serveCommand, UsageError } from './serve.command.js';

async function main(): Promise<void> {
  if (process.argv[2] === 'serve') {
    process.exitCode = await serveCommand(process.argv.slice(3), (line) => process.stdout.write(`${line}\n`));
    return;
  }
  const { values } = parseArgs({
    options: { nats: { type: 'string' }, site: { type: 'string' }, 'data-dir': { type: 'string' } },
    strict: true,
  });
  const config = loadConfig(DiskTransferConfig, {
    ...process.env,
    ...(values.nats ? { WANMIG_NATS_URL: values.nats } : {}),
    ...(values.site ? { WANMIG_SITE: values.site } : {}),
    ...(values['data-dir'] ? { WANMIG_DATA_DIR: values['data-dir'] } : {}),
  });
  config.dataDir = resolve(config.dataDir);
  const nc = await connect({ servers: config.natsUrl, maxReconnectAttempts: -1, name: `disk-transfer.${config.site}` });
  await bootstrapService({
    module: DiskTransferModule.forRoot(config, nc),
    natsUrl: config.natsUrl,
    queue: `disk-transfer.${config.site}`,
  });
  // Nest's shutdown hooks (SIGTERM, SIGINT) stop the service; it closes its exports and `nc`.
  process.stderr.write(`disk-transfer ready site=${config.site}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`disk-transfer: ${err instanceof Error ? err.message : String(err)}\n`);
  const usage =
    err instanceof UsageError ||
    err instanceof UnitError ||
    (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
  process.exit(usage ? 2 : 1);
});

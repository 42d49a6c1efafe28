#!/usr/bin/env node
/**
 * orchestrator: the control plane of one site. Keeps the site's VMs, drives the migrations of VMs leaving it
 * (state in JetStream KV, events as CloudEvents on JetStream), and serves the NATS API (and an HTTP API when given
 * a port).
 *
 *   node dist/apps/orchestrator/src/main.js [--nats URL] [--site NAME] [--peers SITE,...] [--data-dir DIR]
 *        [--sim-runtime-dir DIR] [--http-port N] [--js-domain NAME] [--net-moved-controllers N]
 *        [--net-moved-timeout-ms MS] [--switchover-hold-ms MS] [--qemu-accel auto|tcg|kvm]
 *   (or WANMIG_NATS_URL, WANMIG_SITE, WANMIG_PEERS, WANMIG_DATA_DIR, WANMIG_SIM_RUNTIME_DIR, WANMIG_HTTP_PORT, …)
 */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { bootstrapService, loadConfig } from '@wanmig/service';
import { OrchestratorConfig } from './orchestrator.config.js';
import { startHttpApi } from './http/http.api.js';
import { OrchestratorModule } from './orchestrator.module.js';
import { OrchestratorService } from './orchestrator.service.js';

const FLAGS = {
  nats: 'WANMIG_NATS_URL',
  site: 'WANMIG_SITE',
  peers: 'WANMIG_PEERS',
  'data-dir': 'WANMIG_DATA_DIR',
  'sim-runtime-dir': 'WANMIG_SIM_RUNTIME_DIR',
  'http-port': 'WANMIG_HTTP_PORT',
  'http-host': 'WANMIG_HTTP_HOST',
  'js-domain': 'WANMIG_JS_DOMAIN',
  'net-moved-controllers': 'WANMIG_NET_MOVED_CONTROLLERS',
  'net-moved-timeout-ms': 'WANMIG_NET_MOVED_TIMEOUT_MS',
  'switchover-hold-ms': 'WANMIG_SWITCHOVER_HOLD_MS',
  'qemu-accel': 'WANMIG_QEMU_ACCEL',
} as const;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: Object.fromEntries(Object.keys(FLAGS).map((flag) => [flag, { type: 'string' as const }])),
    strict: true,
  });
  const env: Record<string, string | undefined> = { ...process.env };
  for (const [flag, name] of Object.entries(FLAGS)) if (values[flag] !== undefined) env[name] = values[flag];
  const config = loadConfig(OrchestratorConfig, env);
  config.dataDir = resolve(config.dataDir);
  config.simRuntimeDir = resolve(config.simRuntimeDir);
  const nc = await connect({ servers: config.natsUrl, maxReconnectAttempts: -1, name: `orchestrator.${config.site}` });
  const app = await bootstrapService({
    module: OrchestratorModule.forRoot(config, nc),
    natsUrl: config.natsUrl,
    queue: `orchestrator.${config.site}`,
  });
  let http = '';
  if (config.httpPort >= 0) {
    const service = app.get(OrchestratorService);
    const server = await startHttpApi(service, { host: config.httpHost, port: config.httpPort, site: config.site });
    service.httpUrl = server.url;
    http = ` http=${server.url}`;
  }
  process.stderr.write(`orchestrator ready site=${config.site}${http}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`orchestrator: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? 2 : 1);
});

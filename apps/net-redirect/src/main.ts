#!/usr/bin/env node
/**
 * net-redirect: the network side of a switchover at one site. Publishes a VM's move for existing infrastructure
 * (`net.moved`: a CloudEvent and a request/reply hook for controllers), moves the VM's host routes in the router's
 * namespace (`net.route.move`), relays the connections that still reach the old site (`net.relay.*`), and gives VMs
 * their NIC at this site (`net.vm.*`: the VM's addresses in the site's namespace, forwarding to the guest's socket).
 *
 *   node dist/apps/net-redirect/src/main.js [--nats URL] [--site NAME] [--js-domain NAME]
 *        [--route-netns NS] [--route-via site-a=10.1.0.2,site-b=10.2.0.2] [--ip-bin PATH]
 *        [--vm-netns NS] [--vm-tunnel-host ADDRESS]
 *   (or WANMIG_NATS_URL, WANMIG_SITE, WANMIG_JS_DOMAIN, WANMIG_ROUTE_NETNS, WANMIG_ROUTE_VIA, WANMIG_IP_BIN,
 *    WANMIG_COMMAND_TIMEOUT_MS, WANMIG_VM_NETNS, WANMIG_VM_TUNNEL_HOST, WANMIG_VM_HOLD_MS)
 */
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { bootstrapService, loadConfig } from '@wanmig/service';
import { NetRedirectConfig } from './net-redirect.config.js';
import { NetRedirectModule } from './net-redirect.module.js';

const FLAGS = {
  nats: 'WANMIG_NATS_URL',
  site: 'WANMIG_SITE',
  'js-domain': 'WANMIG_JS_DOMAIN',
  'route-netns': 'WANMIG_ROUTE_NETNS',
  'route-via': 'WANMIG_ROUTE_VIA',
  'ip-bin': 'WANMIG_IP_BIN',
  'vm-netns': 'WANMIG_VM_NETNS',
  'vm-tunnel-host': 'WANMIG_VM_TUNNEL_HOST',
} as const;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: Object.fromEntries(Object.keys(FLAGS).map((flag) => [flag, { type: 'string' as const }])),
    strict: true,
  });
  const env: Record<string, string | undefined> = { ...process.env };
  for (const [flag, name] of Object.entries(FLAGS)) if (values[flag] !== undefined) env[name] = values[flag];
  const config = loadConfig(NetRedirectConfig, env);
  const nc = await connect({ servers: config.natsUrl, maxReconnectAttempts: -1, name: `net-redirect.${config.site}` });
  await bootstrapService({
    module: NetRedirectModule.forRoot(config, nc),
    natsUrl: config.natsUrl,
    queue: `net-redirect.${config.site}`,
  });
  // Nest's shutdown hooks (SIGTERM, SIGINT) cut the relays, detach the NICs (forwarder children exit) and drain `nc`.
  const routes = config.routeVia ? ` routes=${config.routeNetns || '(own namespace)'}` : '';
  process.stderr.write(`net-redirect ready site=${config.site}${routes}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`net-redirect: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? 2 : 1);
});

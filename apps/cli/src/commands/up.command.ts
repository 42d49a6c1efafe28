import { parseArgs } from 'node:util';
import { formatBytes, parseBitRate, parseDuration } from '@wanmig/service';
import { LocalBed, NetBed, netAvailable, netRedirectEnv, netUnavailableMessage, Site } from '@wanmig/testing';
import { UsageError } from '../errors.js';
import { removeStackFile, writeStackFile } from '../api/stack.file.js';

export const UP_USAGE = `  wanmig up [--wan-delay 50ms] [--wan-bandwidth 200mbit] [--http] [--net] [--verbose]
                 two local sites (a nats-server each, joined through the WAN emulator) with every service;
                 --net adds network namespaces (client, router, one per site) and net-redirect, so VMs made
                 with \`vm create --address\` keep their address when they move; runs until Ctrl-C; the other
                 commands find it through its stack file`;

/** `wanmig up`: the local two-site stack, in the foreground until interrupted. */
export async function up(argv: string[], out: (text: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'wan-delay': { type: 'string', default: '50ms' },
      'wan-bandwidth': { type: 'string', default: '200mbit' },
      http: { type: 'boolean' },
      net: { type: 'boolean' },
      verbose: { type: 'boolean' },
    },
  });
  const delayMs = parseDuration(values['wan-delay'], '--wan-delay');
  const bandwidthBps = parseBitRate(values['wan-bandwidth'], '--wan-bandwidth');
  let netBed: NetBed | undefined;
  if (values.net) {
    const unavailable = netUnavailableMessage(await netAvailable());
    if (unavailable) throw new UsageError(`--net: ${unavailable}`);
    netBed = await NetBed.create();
  }
  let bed: LocalBed;
  try {
    bed = await LocalBed.start({
      delayMs,
      bandwidthBps,
      orchestrator: true,
      http: values.http === true,
      ...(netBed ? { net: { env: netRedirectEnv(netBed) } } : {}),
      log: values.verbose ? (line) => process.stderr.write(`${line}\n`) : undefined,
    });
  } catch (err) {
    await netBed?.destroy();
    throw err;
  }
  const sites = {
    [Site.A]: { natsUrl: bed.sites.a.url, httpUrl: bed.httpUrl(Site.A) },
    [Site.B]: { natsUrl: bed.sites.b.url, httpUrl: bed.httpUrl(Site.B) },
  };
  const path = await writeStackFile({
    pid: process.pid,
    sites,
    wan: { delayMs, bandwidthBps },
    startedAt: new Date().toISOString(),
  });
  out(`wanmig up: ${Site.A} and ${Site.B}, WAN ${delayMs} ms one way, ${formatBytes(bandwidthBps / 8)}/s`);
  for (const [site, s] of Object.entries(sites))
    out(`  ${site}  nats ${s.natsUrl}${s.httpUrl ? `  http ${s.httpUrl}` : ''}`);
  if (netBed) {
    out(
      `  network: VM addresses ${netBed.plan.vmRange} (vm create --address ${netBed.vmAddress(1)}), ` +
        `clients in namespace ${netBed.namespace('client')} (ip netns exec ${netBed.namespace('client')} ...)`,
    );
  }
  out(`stack file ${path}; ready (Ctrl-C stops everything)`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  out('stopping');
  await removeStackFile();
  await bed.stop();
  await netBed?.destroy();
  return 0;
}

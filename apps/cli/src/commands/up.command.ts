import { parseArgs } from 'node:util';
import { formatBytes, parseBitRate, parseDuration } from '@wanmig/service';
import { LocalBed, Site } from '@wanmig/testing';
import { removeStackFile, writeStackFile } from '../api/stack.file.js';

export const UP_USAGE = `  wanmig up [--wan-delay 50ms] [--wan-bandwidth 200mbit] [--http] [--verbose]
                 two local sites (a nats-server each, joined through the WAN emulator) with every service;
                 runs until Ctrl-C; the other commands find it through its stack file`;

/** `wanmig up`: the local two-site stack, in the foreground until interrupted. */
export async function up(argv: string[], out: (text: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      'wan-delay': { type: 'string', default: '50ms' },
      'wan-bandwidth': { type: 'string', default: '200mbit' },
      http: { type: 'boolean' },
      verbose: { type: 'boolean' },
    },
  });
  const delayMs = parseDuration(values['wan-delay'], '--wan-delay');
  const bandwidthBps = parseBitRate(values['wan-bandwidth'], '--wan-bandwidth');
  const bed = await LocalBed.start({
    delayMs,
    bandwidthBps,
    orchestrator: true,
    http: values.http === true,
    log: values.verbose ? (line) => process.stderr.write(`${line}\n`) : undefined,
  });
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
  out(`stack file ${path}; ready (Ctrl-C stops everything)`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  out('stopping');
  await removeStackFile();
  await bed.stop();
  return 0;
}

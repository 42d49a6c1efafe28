import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { formatBytes, parseBitRate, parseDuration, parseSize } from '@wanmig/service';
import { LocalBed, serviceEntry } from '@wanmig/testing';
import { UsageError } from '../errors.js';
import { ProgressDisplay } from '../progress.display.js';
import { runDiskMigration, type DiskRunResult } from './disk-migration.runner.js';

export const DISK_USAGE = `usage:
  wanmig disk serve --image PATH (--socket PATH | --port N) [--size SIZE] [--role serve|mirror-target]
  wanmig disk migrate [--image PATH | --size 4GiB --written 1GiB] [--delay 50ms] [--bandwidth 200mbit]
                      [--budget RATE] [--downtime 300ms] [--workload-rate 0] [--workload-data mixed|random]
                      [--no-codec] [--no-verify]
                      [--crash-destination-at 0.5] [--json]
`;

/** `wanmig disk serve`: the disk-transfer service's own serve mode, in the foreground. */
export function diskServe(argv: string[]): Promise<number> {
  const child = spawn(process.execPath, [serviceEntry('disk-transfer'), 'serve', ...argv], { stdio: 'inherit' });
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on('SIGTERM', forward);
  process.on('SIGINT', forward);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
}

/** `wanmig disk migrate`: a disk-only migration between the two sites of the local bed. */
export async function diskMigrate(argv: string[], out: (text: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      image: { type: 'string' },
      size: { type: 'string', default: '1GiB' },
      written: { type: 'string', default: '256MiB' },
      delay: { type: 'string', default: '50ms' },
      bandwidth: { type: 'string', default: '200mbit' },
      budget: { type: 'string' },
      downtime: { type: 'string', default: '300ms' },
      'workload-rate': { type: 'string', default: '0' },
      'workload-data': { type: 'string', default: 'mixed' },
      'no-codec': { type: 'boolean' },
      'no-verify': { type: 'boolean' },
      'crash-destination-at': { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    out(DISK_USAGE);
    return 0;
  }
  const workloadData = values['workload-data'];
  if (workloadData !== 'mixed' && workloadData !== 'random') throw new UsageError('--workload-data is mixed or random');
  const crashAt = values['crash-destination-at'] === undefined ? 0 : Number(values['crash-destination-at']);
  if (!(crashAt >= 0 && crashAt < 1)) throw new UsageError('--crash-destination-at is a fraction in [0, 1)');
  const bandwidthBps = parseBitRate(values.bandwidth, '--bandwidth');
  const display = new ProgressDisplay();
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const bed = await LocalBed.start({ delayMs: parseDuration(values.delay, '--delay'), bandwidthBps });
  let result: DiskRunResult;
  try {
    result = await runDiskMigration(bed, {
      imagePath: values.image,
      sizeBytes: parseSize(values.size, '--size'),
      writtenBytes: parseSize(values.written, '--written'),
      budgetBps: values.budget === undefined ? undefined : parseBitRate(values.budget, '--budget'),
      downtimeMs: parseDuration(values.downtime, '--downtime'),
      workloadBytesPerSecond: parseSize(values['workload-rate'], '--workload-rate'),
      workloadData,
      codec: values['no-codec'] !== true,
      verify: values['no-verify'] !== true,
      crashDestinationAt: crashAt,
      log,
      onProgress: (p) => {
        const done = p.phase === 'bulk' ? p.bulkBytes : p.rawBytesSent;
        const total = p.phase === 'bulk' ? p.sizeBytes : p.rawBytesSent + p.dirtyBytes;
        display.update(p.phase, done, total, p.elapsedSeconds, `wire ${formatBytes(p.frameBytesSent)}`);
      },
    });
  } finally {
    display.done();
    await bed.stop();
  }
  out(formatDiskRun(result));
  if (values.json) out(JSON.stringify(result));
  return result.sourceSha256 === result.destinationSha256 && result.report.verified !== false ? 0 : 1;
}

export function formatDiskRun(r: DiskRunResult): string {
  const rep = r.report;
  const wire = r.wire.aToB + r.wire.bToA;
  const rows: Array<[string, string]> = [
    ['disk', `${formatBytes(r.imageBytes.size)} (${formatBytes(r.imageBytes.written)} written)`],
    ['bulk pass', `${rep.bulkSeconds.toFixed(2)} s`],
    [
      'catch-up rounds',
      rep.rounds.length === 0
        ? 'none needed'
        : rep.rounds.map((x) => `${x.round}: ${formatBytes(x.rawBytes)} in ${x.seconds.toFixed(1)} s`).join('; ') +
          (rep.converged ? '' : ' (round cap reached)'),
    ],
    ['final drain', `${formatBytes(rep.finalDrainBytes)}, writes frozen ${rep.downtimeMs.toFixed(0)} ms`],
    [
      'verify',
      rep.verified === null
        ? 'skipped'
        : `${rep.verified ? 'digests match' : 'MISMATCH'} (${rep.verifyMs.toFixed(0)} ms)`,
    ],
    ['total', `${rep.totalSeconds.toFixed(2)} s`],
    ['disk bytes sent', `${rep.rawBytesSent}`],
    ['bytes on the wire', `${wire} (A→B ${r.wire.aToB}, B→A ${r.wire.bToA})`],
    [
      're-sent bytes',
      `${rep.resentBytes}${r.destinationRestarts ? ` (destination killed and restarted ${r.destinationRestarts}×)` : ''}`,
    ],
    [
      'write throttle',
      rep.throttle.engaged
        ? `engaged at ${formatBytes(rep.throttle.limitBytesPerSecond ?? 0)}/s: ${rep.throttle.writesDelayed} writes delayed, ${(rep.throttle.totalDelayMs / 1000).toFixed(1)} s in all`
        : 'not needed',
    ],
    [
      'guest writes',
      r.workload
        ? `${formatBytes(r.workload.bytesPerSecond)}/s achieved of ${formatBytes(r.workload.targetBytesPerSecond)}/s asked (${r.workload.writes} writes, max latency ${r.workload.maxLatencyMs.toFixed(0)} ms)`
        : 'none',
    ],
    [
      'source = destination',
      r.sourceSha256 === r.destinationSha256 ? `yes (sha256 ${r.sourceSha256.slice(0, 16)}…)` : 'NO',
    ],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}

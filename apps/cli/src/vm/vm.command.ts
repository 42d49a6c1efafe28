import { parseArgs } from 'node:util';
import { formatBytes, parseBitRate, parseDuration, parseSize } from '@wanmig/service';
import { LocalBed } from '@wanmig/testing';
import { UsageError } from '../errors.js';
import { ProgressDisplay } from '../progress.display.js';
import { runVmMigration, type VmRunResult } from './vm-migration.runner.js';

export const VM_USAGE = `usage:
  wanmig vm migrate [--ram 256MiB] [--workload idle|web|db|write-heavy] [--policy smart|kvm] [--no-codec]
                    [--delay 50ms] [--bandwidth 200mbit] [--budget RATE] [--downtime 300ms] [--verify-ram] [--json]
`;

const WORKLOADS = ['idle', 'web', 'db', 'write-heavy'] as const;

/** `wanmig vm migrate`: a running embedded guest moved (memory and state) across the local bed. */
export async function vmMigrate(argv: string[], out: (text: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      ram: { type: 'string', default: '256MiB' },
      workload: { type: 'string', default: 'web' },
      policy: { type: 'string', default: 'smart' },
      'no-codec': { type: 'boolean' },
      delay: { type: 'string', default: '50ms' },
      bandwidth: { type: 'string', default: '200mbit' },
      budget: { type: 'string' },
      downtime: { type: 'string', default: '300ms' },
      'verify-ram': { type: 'boolean' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    out(VM_USAGE);
    return 0;
  }
  const workload = values.workload as (typeof WORKLOADS)[number];
  if (!WORKLOADS.includes(workload)) throw new UsageError(`--workload is one of ${WORKLOADS.join(', ')}`);
  if (values.policy !== 'smart' && values.policy !== 'kvm') throw new UsageError('--policy is smart or kvm');
  const display = new ProgressDisplay();
  const bed = await LocalBed.start({
    delayMs: parseDuration(values.delay, '--delay'),
    bandwidthBps: parseBitRate(values.bandwidth, '--bandwidth'),
    memory: true,
  });
  let result: VmRunResult;
  try {
    result = await runVmMigration(bed, {
      ramBytes: parseSize(values.ram, '--ram'),
      workload,
      policy: values.policy,
      codec: values['no-codec'] !== true,
      downtimeMs: parseDuration(values.downtime, '--downtime'),
      budgetBps: values.budget === undefined ? undefined : parseBitRate(values.budget, '--budget'),
      verifyRam: values['verify-ram'] === true,
      log: (line) => process.stderr.write(`${line}\n`),
      onProgress: (p) => {
        const note = `round ${p.round}, dirty ${formatBytes(p.dirtyBytes)}${p.throttlePercent ? `, throttle ${p.throttlePercent} %` : ''}`;
        display.update(p.phase, p.rawBytesSent, Math.max(p.ramBytes, p.rawBytesSent), p.elapsedSeconds, note);
      },
    });
  } finally {
    display.done();
    await bed.stop();
  }
  out(formatVmRun(result));
  if (values.json) out(JSON.stringify(result));
  const verified =
    result.answersMatch && result.counterContinued && (!values['verify-ram'] || result.report.ramVerified);
  return verified ? 0 : 1;
}

export function formatVmRun(r: VmRunResult): string {
  const rep = r.report;
  const wire = r.wire.aToB + r.wire.bToA;
  const rows: Array<[string, string]> = [
    ['VM', `${r.vmId}, ${formatBytes(rep.ramBytes)} of RAM`],
    ['policy', `${rep.policy}, codec ${rep.codec ? 'on' : 'off'}; stopped: ${rep.stopReason}`],
    [
      'rounds',
      rep.rounds
        .map((x) => `${x.round}: ${formatBytes(x.rawBytes)} → ${formatBytes(x.wireBytes)} in ${x.seconds.toFixed(2)} s`)
        .join('; '),
    ],
    ['throttle', rep.throttlePercent ? `${rep.throttlePercent} % (auto-converge)` : 'not needed'],
    ['stop-and-copy', `${rep.finalPages} pages + device state; paused ${rep.pausedMs.toFixed(0)} ms (source view)`],
    [
      'downtime (client)',
      `${r.probe.maxGapMs} ms longest gap between answers` +
        (rep.ramCheckMs ? `, of which ${rep.ramCheckMs} ms hashing RAM at the destination` : ''),
    ],
    ['total', `${rep.totalSeconds.toFixed(2)} s`],
    ['memory bytes sent', `${rep.rawBytesSent}`],
    ['bytes on the wire', `${wire} (A→B ${r.wire.aToB}, B→A ${r.wire.bToA})`],
    ['RAM check', rep.ramVerified ? 'destination RAM = source RAM at pause (sha256)' : 'not asked (--verify-ram)'],
    ['answers', r.answersMatch ? `same ${Object.keys(rep.answersAtPause).length} answers at both ends` : 'DIFFER'],
    [
      'counter',
      r.counterContinued
        ? `continued: ${rep.answersAtPause.COUNTER} at pause, ${r.probe.firstCounterAfter} first at the destination`
        : 'DID NOT CONTINUE',
    ],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}

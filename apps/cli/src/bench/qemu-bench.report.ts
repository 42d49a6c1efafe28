import { QemuRunOutcome, type QemuBenchResult, type QemuRunResult } from './qemu-bench.types.js';

const RUN_LABELS: Record<QemuRunResult['name'], string> = {
  qemu: 'qemu (libvirt defaults)',
  qemuTuned: 'qemuTuned (multifd zstd)',
  wanmig: 'wanmig',
};

const num = (x: number, digits: number) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');
const int = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');

function verdict(run: QemuRunResult): string {
  const outcome = run.outcome ?? QemuRunOutcome.Completed;
  if (outcome === QemuRunOutcome.NotRun) return 'not run';
  if (outcome === QemuRunOutcome.Failed) return 'FAILED';
  if (run.verified) return 'yes';
  const c = run.checks;
  return c && c.running && c.counter && c.disk === null ? 'disk unchecked' : 'NO';
}

/** The table of `wanmig bench qemu`: one row per run, then wanmig's ratios to each baseline, QEMU's own figures and notes. */
export function formatQemuBench(r: QemuBenchResult): string {
  const o = r.options;
  const runs = [r.runs.qemu, r.runs.qemuTuned, r.runs.wanmig];
  const lines = [
    `guest ${o.ramMiB} MiB RAM, 2 GiB disk, ${r.accel.toUpperCase()}; WAN ${o.delayMs} ms one-way, ` +
      `${(o.bandwidthBps / 1e6).toFixed(0)} Mbit/s; warm-up ${(o.warmupMs / 1000).toFixed(1)} s`,
    '',
    `${'run'.padEnd(34)} ${'total s'.padStart(8)} ${'downtime ms'.padStart(12)} ${'wire bytes'.padStart(14)}  verified`,
    ...runs.map(
      (run) =>
        `${RUN_LABELS[run.name].padEnd(34)} ${num(run.totalSeconds, 2).padStart(8)} ` +
        `${int(run.downtimeMs).padStart(12)} ${int(run.wireBytes).padStart(14)}  ${verdict(run)}`,
    ),
    '',
    'wanmig / baseline (below 1: wanmig is faster, pauses less, sends less):',
    ...(
      [
        ['vs qemu', r.ratios.vsQemu],
        ['vs qemuTuned', r.ratios.vsQemuTuned],
      ] as const
    ).map(
      ([label, x]) =>
        `  ${label.padEnd(13)} total time ${num(x.totalSeconds, 3)}, downtime ${num(x.downtimeMs, 3)}, ` +
        `wire bytes ${num(x.wireBytes, 3)}`,
    ),
    '',
    "QEMU's own figures (source query-migrate): total-time / downtime ms, ram.transferred bytes",
    ...runs.map(
      (run) =>
        `  ${run.name.padEnd(10)} ${int(run.qemu?.totalTimeMs ?? NaN)} / ${int(run.qemu?.downtimeMs ?? NaN)}, ` +
        `${int(run.qemu?.ramTransferred ?? NaN)}`,
    ),
  ];
  for (const run of runs) {
    if (!run.notes?.length) continue;
    lines.push('', `${run.name}:`, ...run.notes.map((note) => `  ${note}`));
  }
  return lines.join('\n');
}

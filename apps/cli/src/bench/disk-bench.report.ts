import { formatBytes } from '@wanmig/service';
import { formatDiskRun } from '../disk/disk.command.js';
import type { DiskBenchResult } from './disk.bench.js';

export function formatDiskBench(r: DiskBenchResult): string {
  const o = r.options;
  const lines = [
    `disk ${formatBytes(o.sizeBytes)} sparse, ${formatBytes(o.writtenBytes)} written; WAN ${o.delayMs} ms one-way, ${(o.bandwidthBps / 1e6).toFixed(0)} Mbit/s`,
    '',
    `${'run'.padEnd(34)} ${'seconds'.padStart(9)} ${'wire bytes'.padStart(14)}  intact`,
    `${r.baseline.tool.padEnd(34)} ${r.baseline.seconds.toFixed(2).padStart(9)} ${String(r.baseline.wireBytes).padStart(14)}  ${r.baseline.sha256Match ? 'yes' : 'NO'}`,
    `${'wanmig disk migration'.padEnd(34)} ${r.wanmig.seconds.toFixed(2).padStart(9)} ${String(r.wanmig.wireBytes).padStart(14)}  ${r.wanmig.sha256Match ? 'yes' : 'NO'}`,
    '',
    `ratios wanmig / baseline: wire bytes ${r.ratios.wireBytes.toFixed(3)}, time ${r.ratios.seconds.toFixed(3)}`,
    '',
    'wanmig detail:',
    formatDiskRun(r.detail),
  ];
  return lines.join('\n');
}

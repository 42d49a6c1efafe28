import { formatBytes } from '@wanmig/service';
import type { StreamBenchResult } from './stream.bench.js';

const pct = (x: number | null) => (x === null ? 'n/a' : `${(x * 100).toFixed(1)} %`);
const mbit = (bps: number | null) => (bps === null ? 'n/a' : `${(bps / 1e6).toFixed(1)} Mbit/s`);

/** The human-readable table of a stream benchmark run. */
export function formatStreamBench(r: StreamBenchResult): string {
  const link =
    r.mode === 'wan' ? `${r.delayMs} ms one-way, ${mbit(r.bandwidthBps)}` : 'loopback (one nats-server, no emulator)';
  const rows: Array<[string, string]> = [
    ['link', link],
    ['data', `${formatBytes(r.payloadBytes)} ${r.mix}, codec ${r.codec ? 'on' : 'off'} (zstd ${r.zstdBackend})`],
    ['payload bytes', `${r.payloadBytes}`],
    ['bytes on the wire', r.wireBytes === null ? 'n/a' : `${r.wireBytes} (A→B ${r.wireAToB}, B→A ${r.wireBToA})`],
    ['wire / payload', r.wireToPayload === null ? 'n/a' : r.wireToPayload.toFixed(4)],
    ['time', `${r.seconds.toFixed(2)} s`],
    ['goodput', `${mbit(r.goodputBps)} (${r.goodputMBps.toFixed(1)} MB/s)`],
    ['link rate used', `${mbit(r.linkBitsPerSecond)} = ${pct(r.linkUtilisation)} of the link`],
    [
      're-sent bytes',
      `${r.resentBytes} (window ${r.windowBytes}; ${r.probes} watermark probes, ${r.rejectedFrames} frames rejected)`,
    ],
    ['link cut', r.cut ? `${r.cut.ms} ms at ${(r.cut.atFraction * 100).toFixed(0)} %` : 'none'],
    [
      'CPU seconds',
      `${r.cpuSeconds.total.toFixed(2)} (sender ${r.cpuSeconds.sender.toFixed(2)}, receiver ${r.cpuSeconds.receiver.toFixed(2)}, nats-servers ${r.cpuSeconds.natsServers.toFixed(2)})`,
    ],
    ['sha256 match', r.sha256Match ? 'yes' : 'NO'],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join('\n');
}

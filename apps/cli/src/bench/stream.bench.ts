import { fork, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { BatchCompressor, CODEC_OFF, ChunkEncoder, mixedDataset, Zstd } from '@wanmig/codec';
import { StreamKind } from '@wanmig/protocol';
import { DEFAULT_WINDOW_BYTES, RecordStreamWriter, StreamSender, recommendedWindowBytes } from '@wanmig/stream';
import { startNatsServer, startTwoSites, type NatsServerHandle, type TwoSites } from '@wanmig/testing';
import { MIXES, type StreamBenchOptions } from './stream-bench.options.js';
import { ownCpuSeconds, processCpuSeconds } from './process-cpu.js';
import type { ReceiverChildArgs, ReceiverChildMessage } from './stream-receiver.child.js';

export interface StreamBenchResult {
  mode: 'wan' | 'loopback';
  mix: string;
  codec: boolean;
  zstdBackend: string;
  delayMs: number | null;
  bandwidthBps: number | null;
  payloadBytes: number;
  /** Bytes the emulator carried in both directions (null on loopback: no emulator to count). */
  wireBytes: number | null;
  wireAToB: number | null;
  wireBToA: number | null;
  seconds: number;
  goodputBps: number;
  goodputMBps: number;
  /** Bits per second the transfer put on the link (A to B). */
  linkBitsPerSecond: number | null;
  linkUtilisation: number | null;
  wireToPayload: number | null;
  windowBytes: number;
  resentBytes: number;
  probes: number;
  rejectedFrames: number;
  cut: { atFraction: number; ms: number } | null;
  cpuSeconds: { sender: number; receiver: number; natsServers: number; total: number };
  sha256Match: boolean;
}

const CHILD = fileURLToPath(new URL('./stream-receiver.child.js', import.meta.url));

/** Pushes a generated data set through stream+codec across the two-site bed (or loopback) and measures it. */
export async function runStreamBench(o: StreamBenchOptions, log: (line: string) => void): Promise<StreamBenchResult> {
  const dir = await mkdtemp(join(tmpdir(), 'wanmig-bench-'));
  let sites: TwoSites | undefined;
  let single: NatsServerHandle | undefined;
  let child: ChildProcess | undefined;
  let nc: NatsConnection | undefined;
  try {
    let senderUrl: string;
    let receiverUrl: string;
    if (o.loopback) {
      single = await startNatsServer({ name: 'loopback' });
      senderUrl = receiverUrl = single.url;
    } else {
      sites = await startTwoSites({ delayMs: o.delayMs, bandwidthBps: o.bandwidthBps });
      senderUrl = sites.a.url;
      receiverUrl = sites.b.url;
    }
    const serverPids = o.loopback ? [single!.pid] : [sites!.a.pid, sites!.b.pid];
    const serverCpu0 = serverPids.reduce((s, pid) => s + processCpuSeconds(pid), 0);

    const migrationId = randomUUID();
    const args: ReceiverChildArgs = {
      natsUrl: receiverUrl,
      migrationId,
      streamId: 1,
      path: join(dir, 'sink.img'),
      size: o.size,
    };
    child = fork(CHILD, [JSON.stringify(args)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const messages = childMessages(child);
    await messages.next('ready');

    nc = await connect({ servers: senderUrl, maxReconnectAttempts: -1 });
    const zstd = await Zstd.load();
    const sender = new StreamSender({
      nc,
      migrationId,
      streamId: 1,
      kind: StreamKind.Bulk,
      windowBytes:
        o.windowBytes ??
        (o.loopback ? DEFAULT_WINDOW_BYTES : recommendedWindowBytes(o.bandwidthBps / 8, 2 * o.delayMs)),
    });
    await sender.open();
    const encoder = new ChunkEncoder(
      o.codec
        ? {
            compressor: new BatchCompressor({ zstd: o.loopback ? zstd.withLevel(1) : zstd }),
            // One pass: every page goes once, so a delta cache would only churn.
            xbzrleCacheFirstSend: false,
          }
        : CODEC_OFF,
    );
    const writer = new RecordStreamWriter(sender, encoder);

    // The data set is made before the clock starts: the figures are the transfer's, not the generator's.
    log(`generating ${(o.size / 2 ** 20).toFixed(0)} MiB of ${o.mix} data`);
    const source = createHash('sha256');
    const chunks = [...mixedDataset({ size: o.size, seed: o.seed, mix: MIXES[o.mix], chunkSize: 256 * 1024 })];
    for (const chunk of chunks) source.update(chunk.data);

    sites?.wan.resetStats();
    const cpu0 = ownCpuSeconds();
    const started = performance.now();
    let cut = false;
    let nextReport = started + 2000;
    for (const chunk of chunks) {
      if (!cut && o.cutAt > 0 && chunk.offset >= o.cutAt * o.size && sites) {
        cut = true;
        log(`cutting the link for ${o.cutMs} ms at ${(chunk.offset / 2 ** 20).toFixed(0)} MiB`);
        sites.wan.cut(o.cutMs);
      }
      await writer.write(chunk.offset, chunk.data);
      const now = performance.now();
      if (now > nextReport) {
        nextReport = now + 2000;
        const mb = chunk.offset / 2 ** 20;
        log(`${mb.toFixed(0)} MiB sent, ${(mb / ((now - started) / 1000)).toFixed(1)} MiB/s`);
      }
    }
    await writer.finish();
    const seconds = (performance.now() - started) / 1000;
    const senderCpu = ownCpuSeconds() - cpu0;
    const done = await messages.next('done');
    const serverCpu = serverPids.reduce((s, pid) => s + processCpuSeconds(pid), 0) - serverCpu0;
    sender.close();

    const wire = sites?.wan.stats();
    const wireBytes = wire ? wire.aToB + wire.bToA : null;
    const rejectedFrames = Object.values(done.rejected).reduce((a: number, b) => a + (b ?? 0), 0);
    return {
      mode: o.loopback ? 'loopback' : 'wan',
      mix: o.mix,
      codec: o.codec,
      zstdBackend: zstd.backend,
      delayMs: o.loopback ? null : o.delayMs,
      bandwidthBps: o.loopback ? null : o.bandwidthBps,
      payloadBytes: o.size,
      wireBytes,
      wireAToB: wire?.aToB ?? null,
      wireBToA: wire?.bToA ?? null,
      seconds,
      goodputBps: (o.size * 8) / seconds,
      goodputMBps: o.size / seconds / 1e6,
      linkBitsPerSecond: wire ? (wire.aToB * 8) / seconds : null,
      linkUtilisation: wire ? (wire.aToB * 8) / seconds / o.bandwidthBps : null,
      wireToPayload: wireBytes === null ? null : wireBytes / o.size,
      windowBytes: sender.windowBytes,
      resentBytes: sender.stats.resentBytes,
      probes: sender.stats.probes,
      rejectedFrames,
      cut: cut ? { atFraction: o.cutAt, ms: o.cutMs } : null,
      cpuSeconds: {
        sender: senderCpu,
        receiver: done.cpuSeconds,
        natsServers: serverCpu,
        total: senderCpu + done.cpuSeconds + serverCpu,
      },
      sha256Match: done.sha256 === source.digest('hex'),
    };
  } finally {
    await nc?.close();
    if (child && child.exitCode === null) child.kill('SIGTERM');
    await sites?.stop();
    await single?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

type DoneMessage = Extract<ReceiverChildMessage, { type: 'done' }>;

/** Waits for the child's messages in order; an error message or an early exit rejects. */
function childMessages(child: ChildProcess) {
  const queue: ReceiverChildMessage[] = [];
  let wake: (() => void) | undefined;
  let exited: Error | undefined;
  child.on('message', (m) => {
    queue.push(m as ReceiverChildMessage);
    wake?.();
  });
  child.on('exit', (code) => {
    exited = new Error(`benchmark receiver exited with code ${code}`);
    wake?.();
  });
  async function next(type: 'ready'): Promise<void>;
  async function next(type: 'done'): Promise<DoneMessage>;
  async function next(type: 'ready' | 'done'): Promise<unknown> {
    for (;;) {
      const msg = queue.shift();
      if (msg?.type === 'error') throw new Error(`benchmark receiver failed: ${msg.message}`);
      if (msg?.type === type) return msg;
      if (!msg && exited) throw exited;
      if (!msg) await new Promise<void>((resolve) => (wake = resolve));
    }
  }
  return { next };
}

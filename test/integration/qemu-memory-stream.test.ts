import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  QemuProcess,
  configureQemuMigration,
  findQemuBinary,
  startQemuMigration,
  waitForQemuMigration,
  type QemuBinary,
  type QemuMigrationInfo,
  type QmpStatus,
} from '@wanmig/hypervisor';
import { recommendedWindowBytes, type SenderStats } from '@wanmig/stream';
import { startTwoSites, trackDir, trackPid, untrackDir, untrackPid, waitUntil, type TwoSites } from '@wanmig/testing';
import {
  QEMU_MIGRATION_STREAM_ID,
  QemuMigrationSource,
  openQemuStreamSender,
  type QemuSourceReport,
} from '../../apps/memory-precopy/src/qemu/index.js';
import {
  QEMU_MIGRATION_STREAM_ID as SINK_STREAM_ID,
  QemuMigrationSink,
  type QemuSinkReport,
} from '../../apps/delta-apply/src/qemu/index.js';

const run = promisify(execFile);
const BUSYBOX = '/bin/busybox';
const COUNTER = 'WANMIG-COUNTER';
const COUNTER_LINE = new RegExp(`^${COUNTER} (\\d+)$`, 'gm');
const RAM_MIB = 128;
/** Under TCG the Debian kernel reaches a busybox init in 5-20 s on 2 shared cores; allow three times that. */
const TCG_BOOT_TIMEOUT_MS = 60_000;
const MIGRATION_TIMEOUT_MS = 90_000;
const WAN = { delayMs: 20, bandwidthBps: 200e6 };
const CUT_MS = 2000;
/** Two bandwidth-delay products and 1 MiB: about 3 MiB in flight, i.e. what QEMU counts as sent ahead of B. */
const WINDOW_BYTES = recommendedWindowBytes(WAN.bandwidthBps / 8, 2 * WAN.delayMs);

/**
 * The qemu driver's memory path end to end (issue 6): a running guest under TCG at site A migrates
 * its RAM through QEMU's own migration stream, relayed from a unix socket at A over NATS and the WAN
 * emulator to site B, where it is fed to a QEMU started with `-incoming`; the guest counts on at B.
 */
describe('QEMU migration stream across the WAN: source socket -> NATS -> destination -incoming', () => {
  let dir: string;
  let qemuBin: QemuBinary;
  let kernel: string;
  let initrd: string;
  let sites: TwoSites;
  let ncA: NatsConnection;
  let ncB: NatsConnection;
  const qemus: QemuProcess[] = [];
  const sources: QemuMigrationSource[] = [];
  const sinks: QemuMigrationSink[] = [];

  beforeAll(async () => {
    qemuBin = await findQemuBinary(); // QemuNotFoundError: install qemu-system-x86 (deploy/bootstrap.sh does)
    dir = await mkdtemp(join(tmpdir(), 'wanmig-qmem-'));
    trackDir(dir);
    kernel = await newestKernel();
    initrd = await buildCounterInitramfs(join(dir, 'guest'));
    sites = await startTwoSites(WAN);
    ncA = await connect({ servers: sites.a.url });
    ncB = await connect({ servers: sites.b.url });
  });

  afterAll(async () => {
    await Promise.all(sources.map((s) => s.close()));
    await Promise.all(sinks.map((s) => s.stop()));
    await Promise.all(qemus.map((q) => q.stop(5000)));
    await ncA?.close();
    await ncB?.close();
    await sites?.stop();
    if (dir) {
      await rm(dir, { recursive: true, force: true });
      untrackDir(dir);
    }
  }, 30_000);

  const startQemu = async (name: string, serial: string, extra: string[] = []) => {
    const qemu = await QemuProcess.start({
      name,
      qmpSocket: join(dir, `${name}.qmp`),
      logFile: join(dir, `${name}.log`),
      qemuBin: qemuBin.path,
      readyTimeoutMs: 15_000,
      onSpawn: (pid) => trackPid(pid),
      args: [...guestArgs(kernel, initrd, serial), ...extra],
    });
    qemus.push(qemu);
    void qemu.exited.then(() => untrackPid(qemu.pid));
    return qemu;
  };

  /** What one migration produced, for the checks and the figures. */
  interface MigrationRun {
    info: QemuMigrationInfo;
    relayed: QemuSourceReport;
    delivered: QemuSinkReport;
    senderStats: SenderStats;
    wanBytes: number;
    wallMs: number;
    lastAtA: number;
    atB: number[];
  }

  /**
   * Boots the guest at A, starts the destination with -incoming at B, wires source socket -> sender (A) ->
   * receiver (B) -> destination socket, migrates, and waits until the guest counts on at B.
   * `whileStreaming` runs once QEMU has written `atBytes` into the relay.
   */
  const migrate = async (label: string, during?: { atBytes: number; run: () => void }): Promise<MigrationRun> => {
    const migrationId = randomUUID();
    const serialA = join(dir, `${label}-serial-a.log`);
    const serialB = join(dir, `${label}-serial-b.log`);
    const migrateSocket = join(dir, `${label}-migrate.sock`);
    const incomingSocket = join(dir, `${label}-incoming.sock`);

    const src = await startQemu(`${label}-src`, serialA);
    const booted = performance.now();
    await waitUntil(async () => (await counters(serialA)).length >= 5, {
      what: 'the guest at site A to print its counter',
      timeoutMs: TCG_BOOT_TIMEOUT_MS,
      intervalMs: 250,
    });
    console.info(`[qemu-memory ${label}] guest counting at A after ${Math.round(performance.now() - booted)} ms`);

    // Same command line, plus -incoming: QEMU listens there, waiting for the stream.
    const dst = await startQemu(`${label}-dst`, serialB, ['-incoming', `unix:${incomingSocket}`]);
    await expect(dst.qmp.execute<QmpStatus>('query-status')).resolves.toMatchObject({ status: 'inmigrate' });
    await dst.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
    await configureQemuMigration(src.qmp); // downtime-limit 300 ms, max-bandwidth unbounded: our relay paces

    const sink = await QemuMigrationSink.start({ nc: ncB, migrationId, socketPath: incomingSocket });
    sinks.push(sink);
    const sender = await openQemuStreamSender({ nc: ncA, migrationId, windowBytes: WINDOW_BYTES });
    const source = await QemuMigrationSource.listen({ migrationId, socketPath: migrateSocket, sender });
    sources.push(source);

    const wanBefore = sites.wan.stats().aToB;
    const completedEvent = src.qmp.waitForEvent<{ status: string }>(
      'MIGRATION',
      (e) => e.data?.status === 'completed',
      MIGRATION_TIMEOUT_MS,
    );
    const t0 = performance.now();
    await startQemuMigration(src.qmp, migrateSocket);
    if (during) {
      await waitUntil(() => source.progress.qemuBytes >= during.atBytes, {
        what: `QEMU to write ${during.atBytes} bytes`,
        timeoutMs: MIGRATION_TIMEOUT_MS,
        intervalMs: 5,
      });
      during.run();
    }
    let info: QemuMigrationInfo;
    try {
      info = await waitForQemuMigration(src.qmp, { migrationId, timeoutMs: MIGRATION_TIMEOUT_MS });
    } catch (err) {
      console.error(`[qemu-memory ${label}] source progress ${JSON.stringify(source.progress)}`);
      console.error(`[qemu-memory ${label}] sink progress ${JSON.stringify(sink.progress)}`);
      console.error(`[qemu-memory ${label}] destination stderr:\n${dst.stderrTail()}`);
      throw err;
    }
    await completedEvent;
    const relayed = await source.done;
    const delivered = await sink.done;
    const wallMs = Math.round(performance.now() - t0);
    const wanBytes = sites.wan.stats().aToB - wanBefore;

    // The destination runs on by itself (the source was running); `cont` only if it did not.
    const status = await waitUntil(
      async () => {
        const s = await dst.qmp.execute<QmpStatus>('query-status');
        return s.status === 'inmigrate' ? undefined : s;
      },
      { what: 'the destination to leave inmigrate', timeoutMs: 20_000, intervalMs: 100 },
    );
    if (status.status === 'paused') await dst.qmp.execute('cont');
    await expect(dst.qmp.execute<QmpStatus>('query-status')).resolves.toMatchObject({ status: 'running' });
    await expect(src.qmp.execute<QmpStatus>('query-status')).resolves.toMatchObject({ status: 'postmigrate' });

    const lastAtA = Math.max(...(await counters(serialA)));
    const atB = await waitUntil(
      async () => {
        const seen = await counters(serialB);
        return seen.some((n) => n >= lastAtA + 5) ? seen : undefined;
      },
      { what: `the guest at site B to count past ${lastAtA}`, timeoutMs: 20_000, intervalMs: 250 },
    );
    // A stays silent once paused for good.
    expect(Math.max(...(await counters(serialA)))).toBe(lastAtA);

    const ram = info.ram!;
    const ratio = relayed.frameBytes / relayed.qemuBytes;
    console.info(
      `[qemu-memory ${label}] QEMU ${info.status}: total-time ${info['total-time']} ms, downtime ${info.downtime} ms, ` +
        `setup ${info['setup-time']} ms, ram transferred ${ram.transferred} B of ${ram.total} B ` +
        `(${ram.normal} normal pages, ${ram.duplicate} zero pages, ${ram['dirty-sync-count']} dirty syncs, ` +
        `${Math.round(ram.mbps)} Mbit/s as QEMU measured it)`,
    );
    console.info(
      `[qemu-memory ${label}] relay: QEMU bytes ${relayed.qemuBytes}, frames ${relayed.frames} ` +
        `(${relayed.compressedFrames} zstd), frame bytes ${relayed.frameBytes} (${(ratio * 100).toFixed(1)} %), ` +
        `WAN a->b ${wanBytes} B, read stalls ${relayed.readStalls} (${relayed.readStalledMs} ms), ` +
        `stream ${relayed.streamMs} ms, tail after QEMU closed ${relayed.tailMs} ms, wall ${wallMs} ms; ` +
        `sender: ${sender.stats.probes} probes, ${sender.stats.resentBytes} B re-sent; ` +
        `destination wrote ${delivered.bytesWritten} B, ${delivered.receiver.duplicates} duplicates, ` +
        `${delivered.receiver.naks} naks; counter ${lastAtA} at A -> ${Math.min(...atB)}..${Math.max(...atB)} at B`,
    );
    return { info, relayed, delivered, senderStats: sender.stats, wanBytes, wallMs, lastAtA, atB };
  };

  /** What holds for every migration that went through. */
  const expectWholeStream = (r: MigrationRun) => {
    // The guest continues where it was: no restart from 0, nothing before the last line A printed.
    expect(Math.min(...r.atB)).toBeGreaterThan(r.lastAtA);
    expect(Math.min(...r.atB)).toBeLessThanOrEqual(r.lastAtA + 2);
    // Every byte QEMU wrote reached the destination QEMU, once, and nothing came back.
    expect(r.delivered.bytesWritten).toBe(r.relayed.qemuBytes);
    expect(r.delivered.ended).toBe(true);
    expect(r.delivered.bytesFromQemu).toBe(0);
    expect(r.relayed.qemuBytes).toBeGreaterThanOrEqual(r.info.ram!.transferred * 0.95);
    expect(r.info.downtime).toBeGreaterThan(0);
  };

  it('moves a running guest from site A to site B, where it counts on; the source ends postmigrate', async () => {
    expect(SINK_STREAM_ID).toBe(QEMU_MIGRATION_STREAM_ID);
    const r = await migrate('plain');
    expectWholeStream(r);
    // A mostly idle guest compresses; what crossed the WAN is the frames (plus NATS framing), not the raw stream.
    expect(r.relayed.compressedFrames).toBeGreaterThan(0);
    expect(r.relayed.frameBytes).toBeLessThan(r.relayed.qemuBytes * 0.8);
    expect(r.wanBytes).toBeGreaterThanOrEqual(r.relayed.frameBytes);
    expect(r.wanBytes).toBeLessThan(r.relayed.frameBytes * 1.2 + 1024 * 1024);
    // QEMU was held to the WAN's pace: the relay stopped reading while its window was full.
    expect(r.relayed.readStalls).toBeGreaterThan(0);
  });

  it('a 2 s cut of the WAN mid-stream holds QEMU back; the stream resumes and the guest still arrives', async () => {
    await sites.waitForLink();
    const r = await migrate('cut', { atBytes: 16 * 1024 * 1024, run: () => sites.wan.cut(CUT_MS) });
    expectWholeStream(r);
    // The sender probed the receiver after the silence and re-sent at most what was in flight.
    expect(r.senderStats.probes).toBeGreaterThan(0);
    expect(r.senderStats.resentBytes).toBeLessThanOrEqual(WINDOW_BYTES + 64 * r.relayed.frames);
    expect(r.relayed.readStalledMs).toBeGreaterThanOrEqual(CUT_MS * 0.8);
    expect(r.info['total-time']).toBeGreaterThanOrEqual(CUT_MS);
  });
});

function guestArgs(kernel: string, initrd: string, serial: string): string[] {
  return [
    ...['-accel', 'tcg', '-m', String(RAM_MIB)],
    ...['-nodefaults', '-display', 'none', '-no-reboot', '-serial', `file:${serial}`],
    ...['-kernel', kernel, '-initrd', initrd, '-append', 'console=ttyS0 panic=-1 quiet'],
  ];
}

/** Every complete counter line the guest printed on this serial log. */
async function counters(serialFile: string): Promise<number[]> {
  const text = await readFile(serialFile, 'utf8').catch(() => '');
  return [...text.replaceAll('\r', '').matchAll(COUNTER_LINE)].map((m) => Number(m[1]));
}

async function newestKernel(): Promise<string> {
  const kernels = (await readdir('/boot').catch(() => [])).filter((f) => f.startsWith('vmlinuz-')).sort();
  if (kernels.length === 0) throw new Error('no /boot/vmlinuz-*: install linux-image-amd64');
  return join('/boot', kernels[kernels.length - 1]);
}

/**
 * An initramfs of a static busybox whose /init runs forever: it prints a counter line on the serial
 * console every 200 ms and keeps 4 MiB of random data in RAM, rewriting 64 KiB of it each time (a
 * small steady dirty rate, so QEMU iterates a few rounds before it switches over).
 */
async function buildCounterInitramfs(workDir: string): Promise<string> {
  const root = join(workDir, 'root');
  await mkdir(join(root, 'bin'), { recursive: true });
  await copyFile(BUSYBOX, join(root, 'bin', 'busybox')).catch(() => {
    throw new Error(`no ${BUSYBOX}: install busybox-static`);
  });
  const init = [
    '#!/bin/busybox sh',
    'B=/bin/busybox',
    '$B mkdir -p /dev /proc',
    '$B mount -t devtmpfs dev /dev',
    '$B dd if=/dev/urandom of=/busy bs=64k count=64 2>/dev/null',
    'i=0',
    'while :; do',
    `  $B echo "${COUNTER} $i"`,
    '  $B dd if=/dev/urandom of=/busy bs=64k count=1 seek=$((i % 64)) conv=notrunc 2>/dev/null',
    '  i=$((i + 1))',
    '  $B usleep 200000',
    'done',
    '',
  ].join('\n');
  await writeFile(join(root, 'init'), init);
  await chmod(join(root, 'init'), 0o755);
  const initrd = join(workDir, 'initrd.cpio');
  await run('/bin/sh', ['-c', `${BUSYBOX} find . | ${BUSYBOX} cpio -o -H newc > '${initrd}'`], {
    cwd: root,
    timeout: 30_000,
  });
  return initrd;
}

import { mkdir, mkdtemp, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient, type QmpStatus } from '@wanmig/hypervisor';
import {
  GUEST_DISK_NODE,
  LOOPBACK_HOST,
  bootGuest,
  getFreePorts,
  queryGuestCounter,
  sha256File,
  sleep,
  startWanEmulator,
  trackDir,
  untrackDir,
  waitUntil,
  type GuestHandle,
  type GuestImage,
  type WanEmulator,
} from '@wanmig/testing';
import { CounterProber, type CounterProbeReport } from '../qemu/counter.prober.js';
import { QemuRunOutcome, type QemuBenchOptions, type QemuRunResult } from './qemu-bench.types.js';

/**
 * QEMU's own way of moving a guest with a local disk, driven over QMP the way libvirt drives
 * `virsh migrate --live --copy-storage-all` (baselines (a) and (b) of `wanmig bench qemu`), plus the pieces any run
 * of the bench shares: the destination disk check (snapshotDestinationDisk + compareDiskImages) and the counter
 * check (counterWentOn). Downtime as a client saw it comes from the wanmig runner's own CounterProber, so that
 * the three runs are measured by the same code.
 */

export const QemuBaselineVariant = { Qemu: 'qemu', QemuTuned: 'qemuTuned' } as const;
export type QemuBaselineVariant = (typeof QemuBaselineVariant)[keyof typeof QemuBaselineVariant];

/** What libvirt names the pieces, more or less; only these runs see them. */
const MIRROR_JOB = 'migrate-disk0';
const MIRROR_TARGET_NODE = 'migrate-disk0-nbd';
const NBD_EXPORT = GUEST_DISK_NODE;
const OVERLAY_NODE = 'disk0-overlay';
/** multifd for (b): 2 channels (QEMU's and libvirt's default count), zstd at QEMU's default level 1. */
const TUNED_MULTIFD_CHANNELS = 2;
const MIRROR_READY_TIMEOUT_MS = 5 * 60_000;
const MIGRATION_TIMEOUT_MS = 5 * 60_000;
const STEP_TIMEOUT_MS = 60_000;
const QMP_CONNECT_TIMEOUT_MS = 15_000;
const COUNTER_AFTER_CONT_TIMEOUT_MS = 30_000;
const MIGRATION_FAILED = new Set(['failed', 'cancelled', 'cancelling']);

/** A baseline run could not be carried out (a QMP step failed, an event never came, QEMU said no). */
export class QemuBaselineError extends Error {
  override readonly name = 'QemuBaselineError';
  constructor(
    readonly variant: string,
    readonly step: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`${variant}: ${step}: ${message}`, options);
  }
}

export interface QemuBaselineContext {
  image: GuestImage;
  log: (line: string) => void;
}

/**
 * One baseline run on a fresh copy of the guest: (a) `qemu` is libvirt with its defaults, (b) `qemuTuned` adds
 * multifd (2 channels, zstd). XBZRLE is not in it: QEMU 9.0 and later refuse it beside multifd ("Multifd is not
 * compatible with xbzrle"), and multifd with zstd is what libvirt users tune a WAN migration with. A run that
 * fails resolves with outcome `failed` and the reason in notes.
 *
 * The steps, as libvirt takes them (qemuMigrationDstPrepare*, qemuMigrationSrcRun, qemuMigrationDstFinish):
 * destination `-incoming defer -S`, capabilities (events; late-block-activate), `migrate-incoming`, NBD server
 * and a writable export of its disk; source capabilities (events; pause-before-switchover), an NBD node through
 * the WAN, `blockdev-mirror` sync=full (background copy mode), BLOCK_JOB_READY, `migrate`; at `pre-switchover`
 * (the source is paused) the mirror is cancelled (a ready mirror's soft cancel completes it: the target is a copy
 * as of the pause), then `migrate-continue`; once both sides report `completed`, `nbd-server-stop` and `cont` on
 * the destination. Before `cont` the destination's disk is snapshotted, so the base image stays as it was at the
 * switch and can be compared with the source's after the run (see snapshotDestinationDisk).
 */
export async function runQemuBaseline(
  variant: QemuBaselineVariant,
  options: QemuBenchOptions,
  context: QemuBaselineContext,
): Promise<QemuRunResult> {
  const log = (line: string) => context.log(`${variant}: ${line}`);
  const run = new BaselineRun(variant, options, context.image, log);
  try {
    return await run.execute();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    log(`FAILED: ${message.split('\n')[0]}`);
    return failedRun(variant, [...run.notes, `failed: ${message}`]);
  } finally {
    await run.cleanup();
  }
}

/** A run that did not produce figures: NaN (JSON null) for each, never a made-up number. */
export function failedRun(
  name: QemuRunResult['name'],
  notes: string[],
  outcome: QemuRunOutcome = QemuRunOutcome.Failed,
): QemuRunResult {
  return { name, totalSeconds: NaN, downtimeMs: NaN, wireBytes: NaN, verified: false, outcome, notes };
}

interface QueryMigrate {
  status?: string;
  'total-time'?: number;
  downtime?: number;
  'error-desc'?: string;
  ram?: { transferred?: number; duplicate?: number; normal?: number; 'dirty-sync-count'?: number };
  'xbzrle-cache'?: { 'cache-miss-rate'?: number; pages?: number; bytes?: number; overflow?: number };
}

interface Prepared {
  src: QmpClient;
  dst: QmpClient;
  source: GuestHandle;
  destination: GuestHandle;
  wan: WanEmulator;
  router: PortRouter;
  migrationPort: number;
  warmup: Promise<void>;
}

interface Moved {
  probe: CounterProber;
  totalSeconds: number;
  wire: { aToB: number; bToA: number };
}

class BaselineRun {
  readonly notes: string[] = [];
  private dir?: string;
  private source?: GuestHandle;
  private destination?: GuestHandle;
  private sourceQmp?: QmpClient;
  private destinationQmp?: QmpClient;
  private wan?: WanEmulator;
  private router?: PortRouter;
  private probe?: CounterProber;

  constructor(
    private readonly variant: QemuBaselineVariant,
    private readonly options: QemuBenchOptions,
    private readonly image: GuestImage,
    private readonly log: (line: string) => void,
  ) {}

  private get tuned(): boolean {
    return this.variant === QemuBaselineVariant.QemuTuned;
  }

  async execute(): Promise<QemuRunResult> {
    const prepared = await this.prepare();
    await prepared.warmup;
    const moved = await this.move(prepared);
    return this.check(prepared, moved);
  }

  /** Both guests, the link and the QEMU settings; the source's workload runs meanwhile (the warm-up). */
  private async prepare(): Promise<Prepared> {
    const o = this.options;
    const dir = (this.dir = await mkdtemp(join(tmpdir(), `wanmig-qbench-${this.variant}-`)));
    trackDir(dir);
    const [nbdPort, migrationPort] = await getFreePorts(2);

    this.log(`booting the source guest (${o.ramMiB} MiB, TCG)`);
    await mkdir(join(dir, 'src'));
    const source = (this.source = await bootGuest({
      disk: this.image.disk,
      workDir: join(dir, 'src'),
      ramMiB: o.ramMiB,
      qmpSocket: join(dir, 'src.qmp'),
    }));
    this.log(`source ready after ${source.readyAfterMs} ms; warming up ${o.warmupMs} ms`);
    const src = (this.sourceQmp = await connectQmp(source.qmpSocket!));
    const warmup = sleep(o.warmupMs);

    // The destination: the same machine on an empty sparse disk of the same size, waiting for the stream, paused.
    await mkdir(join(dir, 'dst'));
    const destinationDisk = join(dir, 'dst', 'disk.img');
    await writeFile(destinationDisk, '');
    await truncate(destinationDisk, (await stat(source.disk)).size);
    const destination = (this.destination = await bootGuest({
      disk: destinationDisk,
      diskMode: 'in-place',
      workDir: join(dir, 'dst'),
      ramMiB: o.ramMiB,
      qmpSocket: join(dir, 'dst.qmp'),
      waitForReady: false,
      extraArgs: ['-incoming', 'defer', '-S'],
    }));
    const dst = (this.destinationQmp = await connectQmp(destination.qmpSocket!));

    // One link for every connection of the move: the emulator forwards to a router at the destination, pointed
    // at the NBD server until the mirror's connection is up, then at the migration listener. So disk and memory
    // share one rate cap and one byte count, as they would on a real WAN.
    const router = (this.router = await PortRouter.start(nbdPort));
    const wan = (this.wan = await startWanEmulator({
      target: { host: LOOPBACK_HOST, port: router.port },
      delayMs: o.delayMs,
      bandwidthBps: o.bandwidthBps,
    }));

    await this.step('destination prepare', async () => {
      await setCapabilities(dst, { events: true, 'late-block-activate': true, ...(this.tuned && { multifd: true }) });
      if (this.tuned) await setTunedParameters(dst);
      await dst.execute('migrate-incoming', { uri: `tcp:${LOOPBACK_HOST}:${migrationPort}` });
      await dst.execute('nbd-server-start', {
        addr: { type: 'inet', data: { host: LOOPBACK_HOST, port: String(nbdPort) } },
      });
      await dst.execute('block-export-add', {
        type: 'nbd',
        id: NBD_EXPORT,
        'node-name': GUEST_DISK_NODE,
        name: NBD_EXPORT,
        writable: true,
      });
    });
    await this.step('source capabilities', async () => {
      await setCapabilities(src, {
        events: true,
        'pause-before-switchover': true,
        ...(this.tuned && { multifd: true }),
      });
      if (this.tuned) await setTunedParameters(src);
    });
    return { src, dst, source, destination, wan, router, migrationPort, warmup };
  }

  /** The move, timed from the NBD node's creation to the destination's `cont` answered. */
  private async move(p: Prepared): Promise<Moved> {
    const { src, dst, wan } = p;
    wan.resetStats();
    // A client asks the guest its counter from the start of the move (every 20 ms, one question at a time).
    const probe = (this.probe = new CounterProber(p.source.servicePort));
    probe.start();
    const startedAt = performance.now();
    const mark = (what: string, since: number) =>
      this.notes.push(`${what} ${Math.round(performance.now() - since)} ms`);

    this.log('disk: blockdev-mirror sync=full into the destination NBD export across the WAN');
    await this.step('disk mirror', async () => {
      await src.execute('blockdev-add', {
        driver: 'nbd',
        'node-name': MIRROR_TARGET_NODE,
        server: { type: 'inet', host: LOOPBACK_HOST, port: String(wan.port) },
        export: NBD_EXPORT,
      });
      const ready = waitJobEvent(src, 'BLOCK_JOB_READY', MIRROR_READY_TIMEOUT_MS);
      await src.execute('blockdev-mirror', {
        'job-id': MIRROR_JOB,
        device: GUEST_DISK_NODE,
        target: MIRROR_TARGET_NODE,
        sync: 'full',
      });
      await ready;
    });
    mark('disk mirror until ready', startedAt);
    p.router.target = p.migrationPort;

    this.log(`memory: migrate${this.tuned ? ' (multifd 2 × zstd)' : ' (defaults)'}`);
    const memoryStarted = performance.now();
    const destinationDone = waitMigration(dst, 'completed', MIGRATION_TIMEOUT_MS + STEP_TIMEOUT_MS);
    destinationDone.catch(() => undefined);
    await this.step('migrate', async () => {
      const paused = waitMigration(src, 'pre-switchover', MIGRATION_TIMEOUT_MS);
      await src.execute('migrate', { uri: `tcp:${LOOPBACK_HOST}:${wan.port}` });
      await paused;
    });
    const pausedAt = performance.now();
    mark('memory until pre-switchover', memoryStarted);

    // The guest is stopped: the mirror ends first (its last dirty blocks reach the destination), then QEMU
    // finishes, then the destination lets go of its export and runs.
    await this.step('mirror cancel', async () => {
      const ended = waitJobEvent(src, 'BLOCK_JOB_COMPLETED', STEP_TIMEOUT_MS);
      await src.execute('block-job-cancel', { device: MIRROR_JOB });
      await ended;
    });
    mark('mirror cancel (final drain)', pausedAt);
    const continuedAt = performance.now();
    await this.step('migrate-continue', async () => {
      const completed = waitMigration(src, 'completed', STEP_TIMEOUT_MS);
      await src.execute('migrate-continue', { state: 'pre-switchover' });
      await completed;
      await destinationDone;
    });
    mark('device state until both sides completed', continuedAt);
    await this.step('nbd-server-stop', () => dst.execute('nbd-server-stop'));
    const snapshot = await this.step('snapshot', () =>
      snapshotDestinationDisk(dst, join(this.dir!, 'dst', 'overlay.qcow2')),
    );
    this.notes.push(`destination snapshot ${Math.round(snapshot.ms)} ms (in the pause)`);
    await this.step('cont', () => dst.execute('cont'));
    const totalSeconds = (performance.now() - startedAt) / 1000;
    probe.switchTo(p.destination.servicePort);
    mark('pause until cont answered (QMP side)', pausedAt);
    return { probe, totalSeconds, wire: wan.stats() };
  }

  /** The destination runs, the counter went on, the disks match; QEMU's own figures. */
  private async check(p: Prepared, moved: Moved): Promise<QemuRunResult> {
    const { src, dst, source, destination } = p;
    const status = await dst.execute<QmpStatus>('query-status');
    await waitUntil(() => moved.probe.answersAfterSwitch > 0, {
      what: 'the guest to answer at the destination',
      timeoutMs: COUNTER_AFTER_CONT_TIMEOUT_MS,
      intervalMs: 10,
    }).catch(() => undefined);
    const probe = await moved.probe.stop();
    const counterContinued = await counterWentOn(destination.servicePort, probe);
    const info = await src.execute<QueryMigrate>('query-migrate');
    this.notes.push(
      `client: ${probe.answers} answers, longest gap from ${Math.round(probe.maxGapStartMs)} ms into the move`,
      `counter: source last ${probe.lastSourceCounter}, destination first ${probe.firstDestinationCounter}`,
      `QEMU ram: transferred ${info.ram?.transferred}, normal pages ${info.ram?.normal}, ` +
        `zero pages ${info.ram?.duplicate}, dirty syncs ${info.ram?.['dirty-sync-count']}`,
    );
    if (info['xbzrle-cache']) {
      const x = info['xbzrle-cache'];
      this.notes.push(`xbzrle: pages ${x.pages}, bytes ${x.bytes}, cache miss rate ${x['cache-miss-rate']}`);
    }

    // The disks, with both QEMUs gone: the source never ran again after the pause, and since the switch the
    // destination has written only to its overlay.
    await this.stopGuests();
    const disks = await compareDiskImages(source.disk, destination.disk);
    this.notes.push(`disk sha256 ${disks.equal ? 'equal' : 'DIFFERENT'} (${disks.source.slice(0, 16)}…)`);
    const running = status.status === 'running';
    if (!running) this.notes.push(`destination status after cont: ${status.status}`);
    if (!counterContinued) this.notes.push('the counter did not go on past the source at the destination');

    const { wire } = moved;
    const result: QemuRunResult = {
      name: this.variant,
      totalSeconds: moved.totalSeconds,
      downtimeMs: Math.round(probe.maxGapMs),
      wireBytes: wire.aToB + wire.bToA,
      verified: running && counterContinued && disks.equal,
      checks: { running, counter: counterContinued, disk: disks.equal },
      qemu: { totalTimeMs: info['total-time'], downtimeMs: info.downtime, ramTransferred: info.ram?.transferred },
      outcome: QemuRunOutcome.Completed,
      notes: [`wire: ${wire.aToB} bytes source→destination, ${wire.bToA} back`, ...this.notes],
    };
    this.log(
      `${result.totalSeconds.toFixed(1)} s, client-seen downtime ${result.downtimeMs} ms, ${result.wireBytes} bytes ` +
        `on the wire, verified ${result.verified}`,
    );
    return result;
  }

  /** Runs one step; its failure names the step, with QEMU's stderr tails for context. */
  private async step<T>(what: string, action: () => Promise<T>): Promise<T> {
    try {
      return await action();
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new QemuBaselineError(this.variant, what, message, { cause: err });
    }
  }

  private async stopGuests(): Promise<void> {
    await Promise.all([this.sourceQmp?.close(), this.destinationQmp?.close()]);
    await Promise.all([this.source?.stop(), this.destination?.stop()]);
  }

  async cleanup(): Promise<void> {
    await this.probe?.stop();
    await this.stopGuests();
    await this.wan?.close();
    await this.router?.close();
    if (this.dir) {
      await rm(this.dir, { recursive: true, force: true });
      untrackDir(this.dir);
    }
  }
}

async function connectQmp(socketPath: string): Promise<QmpClient> {
  return waitUntil(() => QmpClient.connect(socketPath), {
    what: `QMP on ${socketPath}`,
    timeoutMs: QMP_CONNECT_TIMEOUT_MS,
    intervalMs: 100,
  });
}

async function setCapabilities(qmp: QmpClient, capabilities: Record<string, boolean>): Promise<void> {
  await qmp.execute('migrate-set-capabilities', {
    capabilities: Object.entries(capabilities).map(([capability, state]) => ({ capability, state })),
  });
}

/** multifd's parameters must match on both sides. */
async function setTunedParameters(qmp: QmpClient): Promise<void> {
  await qmp.execute('migrate-set-parameters', {
    'multifd-channels': TUNED_MULTIFD_CHANNELS,
    'multifd-compression': 'zstd',
  });
}

/** Resolves at MIGRATION `status` (subscribe before the command that leads there); rejects on failure. */
async function waitMigration(qmp: QmpClient, status: string, timeoutMs: number): Promise<void> {
  const event = await qmp.waitForEvent<{ status?: string }>(
    'MIGRATION',
    (e) => e.data?.status === status || MIGRATION_FAILED.has(e.data?.status ?? ''),
    timeoutMs,
  );
  if (event.data?.status === status) return;
  const info = await qmp.execute<QueryMigrate>('query-migrate').catch(() => undefined);
  throw new Error(`migration ${event.data?.status}${info?.['error-desc'] ? `: ${info['error-desc']}` : ''}`);
}

/** Resolves at `event` for the mirror job; rejects when the job reports an error or ends otherwise. */
async function waitJobEvent(qmp: QmpClient, event: string, timeoutMs: number): Promise<void> {
  const ends = new Set([event, 'BLOCK_JOB_ERROR', 'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED']);
  const got = await qmp.waitForEvent<{ device?: string; error?: string }>(
    '*',
    (e) => ends.has(e.event) && e.data?.device === MIRROR_JOB,
    timeoutMs,
  );
  if (got.event === event && got.data?.error === undefined) return;
  throw new Error(`mirror job: ${got.event}${got.data?.error ? ` (${got.data.error})` : ''} instead of ${event}`);
}

/**
 * Freezes a paused destination's disk as it is now, for checking it later without adding a hash to the pause:
 * `blockdev-snapshot-sync` puts a new qcow2 overlay on top of `node` (the guest's disk), so every later guest write
 * goes to the overlay and the base image stays as it was at the switch. Compare the base with the source's image
 * after the run (compareDiskImages). Returns the overlay's path and how long QEMU took (part of the pause).
 */
export async function snapshotDestinationDisk(
  qmp: QmpClient,
  overlayPath: string,
  node: string = GUEST_DISK_NODE,
): Promise<{ overlayPath: string; ms: number }> {
  const started = performance.now();
  await qmp.execute('blockdev-snapshot-sync', {
    'node-name': node,
    'snapshot-file': overlayPath,
    'snapshot-node-name': `${node === GUEST_DISK_NODE ? OVERLAY_NODE : `${node}-overlay`}`,
    format: 'qcow2',
  });
  return { overlayPath, ms: performance.now() - started };
}

/**
 * The guest's counter went on at the destination: its first answer there was not below the source's last one, no
 * answer went back, and (asked again, for up to 30 s) the destination counts past the source's last value.
 */
export async function counterWentOn(destinationPort: number, probe: CounterProbeReport): Promise<boolean> {
  const { lastSourceCounter: last, firstDestinationCounter: first } = probe;
  if (last === undefined || first === undefined || first < last || probe.counterWentBack) return false;
  return waitUntil(async () => (await queryGuestCounter(destinationPort, LOOPBACK_HOST, 2_000)) > last, {
    what: `the counter at the destination to pass ${last}`,
    timeoutMs: COUNTER_AFTER_CONT_TIMEOUT_MS,
    intervalMs: 200,
  }).catch(() => false);
}

/** sha256 of both images (run it once neither QEMU writes them any more). */
export async function compareDiskImages(
  sourceImage: string,
  destinationImage: string,
): Promise<{ equal: boolean; source: string; destination: string }> {
  const [source, destination] = await Promise.all([sha256File(sourceImage), sha256File(destinationImage)]);
  return { equal: source === destination, source, destination };
}

/**
 * A TCP forwarder at the destination end of the WAN link: each new connection goes to `target` as it is when the
 * connection arrives. The baseline points it at the NBD server until the mirror's connection is up, then at the
 * migration listener, so that one emulated link carries both.
 */
class PortRouter {
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    public target: number,
  ) {
    server.on('connection', (client) => this.forward(client));
  }

  static async start(target: number): Promise<PortRouter> {
    const server = createServer({ allowHalfOpen: true, noDelay: true });
    const router = new PortRouter(server, target);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, LOOPBACK_HOST, () => resolve());
    });
    return router;
  }

  get port(): number {
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('port router is not listening');
    return address.port;
  }

  close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private forward(client: Socket): void {
    const upstream = connect({ host: LOOPBACK_HOST, port: this.target, allowHalfOpen: true, noDelay: true });
    for (const socket of [client, upstream]) {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}

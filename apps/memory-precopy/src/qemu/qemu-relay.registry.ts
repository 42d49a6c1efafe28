import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { Logger, type BeforeApplicationShutdown } from '@nestjs/common';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  AckType,
  decodeAck,
  encodeAck,
  ErrorCode,
  MigrationRef,
  OpenQemuRelayRequest,
  Subjects,
  toWireError,
  validateDto,
  ValidationError,
  WanmigError,
  type OpenQemuRelayReply,
  type QemuRelayStatusReply,
  type WireError,
} from '@wanmig/protocol';
import { recommendedWindowBytes, TokenBucket } from '@wanmig/stream';
import {
  QemuMigrationSource,
  type QemuFrameOutlet,
  type QemuMigrationSourceOptions,
  type QemuSourceProgress,
  type QemuSourceReport,
} from './qemu-migration.source.js';
import { QemuReceiverUnavailableError, QemuRelayConflictError, QemuRelayNotFoundError } from './qemu-relay.errors.js';
import { QEMU_MIGRATION_STREAM_ID } from './qemu-stream.constants.js';
import { openQemuStreamSender, type QemuStreamSenderOptions } from './qemu-stream.sender.js';

/** The link rate the window is sized for when the request gives no budget (the demo WAN's). */
export const RELAY_ASSUMED_LINK_BPS = 200e6;
/** How long the receiver of the stream gets to answer the probe that opens a relay. */
export const RELAY_PROBE_TIMEOUT_MS = 5_000;
/** Relay sockets live in `<runtimeDir>/qemu/`. */
export const RELAY_SOCKET_SUBDIR = 'qemu';

/** The sender the relay writes to (a StreamSender from openQemuStreamSender; a fake in unit specs). */
export type RelaySender = QemuFrameOutlet & { readonly stats: { bytesSent: number; resentBytes: number } };

/** What the registry calls to open a relay: the seam unit specs replace. */
export interface QemuRelayDeps {
  /** Round trip (ms) to the receiver of the migration's QEMU stream; rejects when none answers. */
  probeReceiver(nc: NatsConnection, migrationId: string): Promise<number>;
  openSender(options: QemuStreamSenderOptions): Promise<RelaySender>;
  listen(options: QemuMigrationSourceOptions): Promise<QemuMigrationSource>;
}

export const DEFAULT_QEMU_RELAY_DEPS: QemuRelayDeps = {
  probeReceiver,
  openSender: openQemuStreamSender,
  listen: (options) => QemuMigrationSource.listen(options),
};

interface RelayEntry {
  /** As asked: a repeat of the same request gets the same reply. */
  asked: { windowBytes?: number; bandwidthBps?: number; returnPath: boolean };
  reply: OpenQemuRelayReply;
  sender: RelaySender;
  source: QemuMigrationSource;
  /** Settles (never rejects) once the relay has delivered, failed or been closed. */
  settled: Promise<void>;
  /** The source's progress when it settled: what status reports from then on (it must not drift after the end). */
  final?: QemuSourceProgress;
  closed: boolean;
  report?: QemuSourceReport;
  error?: WireError;
}

/**
 * memory-precopy's relays of QEMU migration streams (`mem.qemu.relay*`): one per migration, each a unix socket under
 * `<runtimeDir>/qemu/` that the source QEMU migrates to, relayed by QemuMigrationSource over a stream sender opened
 * against the destination's receiver (delta-apply's `mem.qemu.incoming` starts it). With `returnPath` the relay also
 * receives, on the service's own connection, what the destination QEMU writes back (post-copy's page requests) and
 * writes it into the source QEMU's socket. A relay is not reopened: QEMU cannot resume a stream in the middle, so
 * after a close or a failure a new attempt takes a new migration id.
 */
export class QemuRelayRegistry implements BeforeApplicationShutdown {
  private readonly logger = new Logger('memory-precopy');
  private readonly relays = new Map<string, RelayEntry>();
  private readonly opening = new Map<string, Promise<unknown>>();
  private stopping = false;
  /** Absolute: QEMU resolves a relative `unix:` path against its own working directory. */
  private readonly socketDir: string;

  constructor(
    private readonly nc: NatsConnection,
    runtimeDir: string,
    private readonly deps: QemuRelayDeps = DEFAULT_QEMU_RELAY_DEPS,
  ) {
    this.socketDir = resolve(runtimeDir, RELAY_SOCKET_SUBDIR);
  }

  /** Opens the relay (or answers a repeat of the same request with the same reply). */
  async open(body: unknown): Promise<OpenQemuRelayReply> {
    const request = parse(OpenQemuRelayRequest, body);
    const { migrationId } = request;
    // One open per migration at a time: a repeat that races the first waits for it and is answered from it.
    const previous = this.opening.get(migrationId);
    const opening = (previous ?? Promise.resolve()).catch(() => undefined).then(() => this.openOnce(request));
    this.opening.set(migrationId, opening);
    try {
      return await opening;
    } finally {
      if (this.opening.get(migrationId) === opening) this.opening.delete(migrationId);
    }
  }

  status(body: unknown): QemuRelayStatusReply {
    return this.view(this.entry(parse(MigrationRef, body).migrationId));
  }

  /** Stops relaying; QEMU's migration fails and its guest runs on. Idempotent: a repeat gets the same status. */
  async close(body: unknown): Promise<QemuRelayStatusReply> {
    const entry = this.entry(parse(MigrationRef, body).migrationId);
    if (!entry.closed) {
      entry.closed = true;
      await entry.source.close();
      await entry.settled;
      this.logger.log(`QEMU relay of ${entry.reply.migrationId} closed after ${entry.source.progress.qemuBytes} bytes`);
    }
    return this.view(entry);
  }

  /** Closes every relay still under way (their QEMUs fail the migration and run on), before `nc` is drained. */
  async beforeApplicationShutdown(): Promise<void> {
    this.stopping = true;
    await Promise.allSettled([...this.opening.values()]);
    const open = [...this.relays.values()].filter((entry) => !entry.closed && !entry.report && !entry.error);
    await Promise.allSettled(open.map((entry) => this.close({ migrationId: entry.reply.migrationId })));
  }

  private async openOnce(request: OpenQemuRelayRequest): Promise<OpenQemuRelayReply> {
    const { migrationId } = request;
    const known = this.relays.get(migrationId);
    if (known) return this.repeat(known, request);
    if (this.stopping) throw new WanmigError(ErrorCode.Unavailable, 'memory-precopy is shutting down');

    await mkdir(this.socketDir, { recursive: true, mode: 0o700 });
    const socketPath = join(this.socketDir, `${migrationId}.sock`);
    let rttMs: number;
    try {
      rttMs = await this.deps.probeReceiver(this.nc, migrationId);
    } catch (err) {
      throw err instanceof WanmigError ? err : new QemuReceiverUnavailableError(migrationId, err);
    }
    const rate = request.bandwidthBps ? request.bandwidthBps / 8 : undefined;
    const windowBytes = request.windowBytes ?? recommendedWindowBytes(rate ?? RELAY_ASSUMED_LINK_BPS / 8, rttMs);
    const sender = await this.deps.openSender({
      nc: this.nc,
      migrationId,
      windowBytes,
      limiter: rate ? new TokenBucket(rate) : undefined,
    });
    let source: QemuMigrationSource;
    try {
      source = await this.deps.listen({
        migrationId,
        socketPath,
        sender,
        ...(request.returnPath ? { returnPath: { nc: this.nc } } : {}),
      });
    } catch (err) {
      sender.close();
      throw err;
    }
    const reply: OpenQemuRelayReply = { migrationId, socketPath, windowBytes, rttMs: Math.round(rttMs * 10) / 10 };
    const entry: RelayEntry = {
      asked: { windowBytes: request.windowBytes, bandwidthBps: request.bandwidthBps, returnPath: request.returnPath },
      reply,
      sender,
      source,
      closed: false,
      settled: Promise.resolve(),
    };
    entry.settled = source.done.then(
      (report) => {
        entry.final = source.progress;
        entry.report = report;
        this.logger.log(
          `QEMU stream of ${migrationId} delivered: ${report.qemuBytes} bytes in ${report.frames} frames ` +
            `(${report.frameBytes} on the wire), tail ${report.tailMs} ms`,
        );
      },
      (err: unknown) => {
        entry.final = source.progress;
        entry.error = toWireError(err);
        if (!entry.closed) this.logger.warn(`QEMU relay of ${migrationId} failed: ${entry.error.message}`);
      },
    );
    this.relays.set(migrationId, entry);
    this.logger.log(
      `QEMU relay of ${migrationId} listens on ${socketPath} (window ${windowBytes}, rtt ${reply.rttMs} ms` +
        `${request.returnPath ? ', return path' : ''})`,
    );
    return reply;
  }

  private repeat(entry: RelayEntry, request: OpenQemuRelayRequest): OpenQemuRelayReply {
    const { migrationId } = request;
    const { asked } = entry;
    if (
      asked.windowBytes !== request.windowBytes ||
      asked.bandwidthBps !== request.bandwidthBps ||
      asked.returnPath !== request.returnPath
    ) {
      throw new QemuRelayConflictError(migrationId, 'already open with other options');
    }
    if (entry.closed || entry.error) {
      throw new QemuRelayConflictError(
        migrationId,
        `${entry.closed ? 'closed' : 'failed'}; a QEMU stream starts again from byte 0, under a new migration id`,
      );
    }
    return entry.reply;
  }

  private entry(migrationId: string): RelayEntry {
    const entry = this.relays.get(migrationId);
    if (!entry) throw new QemuRelayNotFoundError(migrationId);
    return entry;
  }

  private view(entry: RelayEntry): QemuRelayStatusReply {
    const p = entry.final ?? entry.source.progress;
    return {
      migrationId: entry.reply.migrationId,
      socketPath: entry.reply.socketPath,
      windowBytes: entry.reply.windowBytes,
      qemuBytes: p.qemuBytes,
      framedBytes: p.framedBytes,
      frameBytes: p.frameBytes,
      frames: p.frames,
      compressedFrames: p.compressedFrames,
      readStalls: p.readStalls,
      readStalledMs: p.readStalledMs,
      connected: p.connected,
      qemuClosed: p.qemuClosed,
      senderBytes: entry.sender.stats.bytesSent,
      resentBytes: entry.sender.stats.resentBytes,
      returnBytes: p.returnBytes,
      done: entry.report !== undefined,
      failed: entry.error !== undefined,
      closed: entry.closed,
      digestSegments: p.digestSegments,
      streamSha256: p.streamSha256,
      ...(entry.report ? { streamMs: entry.report.streamMs, tailMs: entry.report.tailMs } : {}),
      ...(entry.error ? { error: entry.error } : {}),
    };
  }
}

/**
 * Validates a request; the migration id must be lower-case too: frames carry it as 16 bytes and decode to lower
 * case, and the data subjects use it as given, so an upper-case id would never meet its own acks.
 */
function parse<T extends { migrationId: string }>(dto: new () => T, body: unknown): T {
  const request = validateDto(dto, body);
  if (request.migrationId !== request.migrationId.toLowerCase()) {
    throw new ValidationError(['migrationId: must be lower-case'], dto.name);
  }
  return request;
}

/** Asks the receiver of the migration's QEMU stream for its watermark, once; resolves with the round trip. */
async function probeReceiver(nc: NatsConnection, migrationId: string): Promise<number> {
  const t0 = performance.now();
  const reply = await nc.request(
    Subjects.streamStatus(migrationId, QEMU_MIGRATION_STREAM_ID),
    encodeAck({ type: AckType.Status, nextSeq: 0, cursor: 0 }),
    { timeout: RELAY_PROBE_TIMEOUT_MS },
  );
  const rttMs = performance.now() - t0;
  if (decodeAck(reply.data).type === AckType.Failed) {
    throw new QemuRelayConflictError(migrationId, 'the receiver reports its stream failed');
  }
  return rttMs;
}

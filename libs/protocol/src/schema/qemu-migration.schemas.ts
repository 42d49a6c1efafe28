import {
  type AbortQemuIncomingReply,
  type OpenQemuRelayReply,
  type QemuIncomingStatusReply,
  type QemuRelayStatusReply,
  type QemuSinkStatus,
  type ResumeQemuReply,
  type StartQemuIncomingReply,
} from '../control/qemu-migration.dto.js';
import { WIRE_ERROR_SCHEMA } from './error.schemas.js';
import { type JsonSchema } from './json-schema.js';
import { amount, arrayOf, boolean, count, objectSchema, string, uuid } from './object.schema.js';

/** Replies of the `qemu` driver's memory verbs (memory-precopy's `mem.qemu.relay*`, delta-apply's `mem.qemu.*`). */

const port = (description: string): JsonSchema => ({ description, type: 'integer', minimum: 0, maximum: 65535 });

export const OPEN_QEMU_RELAY_REPLY_SCHEMA = objectSchema<OpenQemuRelayReply>({
  description: 'The relay listens: the source QEMU migrates to `unix:<socketPath>`.',
  properties: {
    migrationId: uuid(),
    socketPath: string('Unix socket for QEMU’s `migrate` (`uri: unix:<socketPath>`).'),
    windowBytes: count('Bytes of QEMU’s stream in flight over the WAN.'),
    rttMs: amount('Round trip to the destination’s receiver when the relay opened.'),
  },
  optional: {},
});

export const QEMU_RELAY_STATUS_REPLY_SCHEMA = objectSchema<QemuRelayStatusReply>({
  description: 'Where the relay of QEMU’s migration stream stands.',
  properties: {
    migrationId: uuid(),
    socketPath: string(),
    windowBytes: count(),
    qemuBytes: count('Bytes read from QEMU’s socket.'),
    framedBytes: count('Of those, the bytes framed and handed to the stream.'),
    frameBytes: count('Frame payload bytes (after zstd where it paid).'),
    frames: count(),
    compressedFrames: count(),
    readStalls: count('Times the socket was not read because the window was full.'),
    readStalledMs: amount(),
    connected: boolean('QEMU connected.'),
    qemuClosed: boolean('QEMU closed its end: its stream is whole.'),
    senderBytes: count('Bytes put on NATS, headers and re-sends included.'),
    resentBytes: count(),
    returnBytes: count('Bytes of the destination QEMU’s return path written into the source QEMU’s socket.'),
    done: boolean('The whole stream is durable at the destination.'),
    failed: boolean('The relay failed or was closed before its end.'),
    closed: boolean('`mem.qemu.relay.close` was called.'),
    digestSegments: count('Digest segments of QEMU’s stream sent so far (the last one with the End).'),
    streamSha256: string(
      'sha256 over the segments’ digests: the destination’s feed reports the same when all matched.',
    ),
    streamMs: amount('From QEMU’s connection to the last frame durable at the destination.'),
    tailMs: amount('From QEMU closing its end to the last frame durable at the destination.'),
    error: WIRE_ERROR_SCHEMA,
  },
  optional: { streamMs: true, tailMs: true, error: true },
});

export const START_QEMU_INCOMING_REPLY_SCHEMA = objectSchema<StartQemuIncomingReply>({
  description: 'The destination QEMU waits for the stream (`inmigrate`), fed by delta-apply.',
  properties: {
    migrationId: uuid(),
    diskPath: string('The image QEMU runs on, in place.'),
    servicePort: port('Host port on 127.0.0.1 forwarded to the guest’s service; 0 for a guest on a tap (`network`).'),
    pid: count(),
    status: string('QEMU’s run state.'),
    monitorSocket: string(
      'A QMP monitor of the destination QEMU for observers on its host; delta-apply keeps its own.',
    ),
  },
  optional: {},
});

const QEMU_SINK_STATUS_SCHEMA = objectSchema<QemuSinkStatus>({
  description: 'The feed of QEMU’s stream into the destination QEMU’s incoming socket.',
  properties: {
    bytesWritten: count(),
    frames: count(),
    payloadBytes: count(),
    connected: boolean(),
    ended: boolean('The last frame was written and the write side closed.'),
    returnBytes: count('Bytes of the destination QEMU’s return path sent back to the relay (post-copy).'),
    returnPathError: string('Why sending the return path back broke, if it did.'),
    done: boolean('The stream is over: acknowledged to its end, or failed.'),
    verifiedBytes: count('Stream bytes checked against the relay’s digests.'),
    endVerified: boolean('The last segment’s digest came with the End and matched: the stream is the source QEMU’s.'),
    streamSha256: string('sha256 over the checked segments’ digests: the relay’s `streamSha256` once both are whole.'),
    error: WIRE_ERROR_SCHEMA,
  },
  optional: { returnPathError: true, error: true },
});

export const QEMU_INCOMING_STATUS_REPLY_SCHEMA = objectSchema<QemuIncomingStatusReply>({
  description: 'The destination QEMU of a migration and its feed.',
  properties: {
    migrationId: uuid(),
    diskPath: string(),
    servicePort: port('Host port on 127.0.0.1 forwarded to the guest’s service.'),
    pid: count(),
    monitorSocket: string('A QMP monitor of the destination QEMU for observers on its host.'),
    postcopy: boolean('Started with `postcopy`.'),
    status: string('QEMU’s run state (`inmigrate`, `paused`, `running`...), `exited` or `aborted`.'),
    running: boolean(),
    migrationStatus: string('The destination’s `query-migrate` status.'),
    loaded: boolean(
      'The guest waits paused for `mem.qemu.resume` (or runs already): the stream is loaded, or in post-copy ' +
        '(`postcopy-active`) its device state.',
    ),
    resumed: boolean(),
    aborted: boolean(),
    resumedAt: amount('Epoch milliseconds of the resume.'),
    sink: QEMU_SINK_STATUS_SCHEMA,
  },
  optional: { migrationStatus: true, resumedAt: true },
});

export const RESUME_QEMU_REPLY_SCHEMA = objectSchema<ResumeQemuReply>({
  description: 'The destination runs the guest.',
  properties: {
    migrationId: uuid(),
    status: string('QEMU’s run state after `cont`.'),
    resumedAt: amount('Epoch milliseconds when `cont` was answered.'),
    loadWaitMs: amount('Waiting for the stream to finish loading.'),
    contMs: amount(),
    warnings: arrayOf(string(), 'Steps after `cont` that failed without failing the resume.'),
  },
  optional: {},
});

export const ABORT_QEMU_INCOMING_REPLY_SCHEMA = objectSchema<AbortQemuIncomingReply>({
  description: 'The destination QEMU is gone and will not run.',
  properties: {
    migrationId: uuid(),
    stopped: boolean('This request stopped a QEMU (false for a repeat).'),
    wasRunning: boolean('The stopped QEMU had run (`stopRunning`).'),
  },
  optional: {},
});

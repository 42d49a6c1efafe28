import 'reflect-metadata';
import { IsBoolean, IsIn, IsInt, IsOptional, IsUUID, Matches, Max, Min } from 'class-validator';
import type { WireError } from '../errors.js';
import { NestedDto } from '../nested-dto.decorator.js';

/**
 * The `qemu` driver's memory path as verbs of the services that own its pieces: memory-precopy relays QEMU's
 * migration stream from a unix socket at the source site, delta-apply starts the destination QEMU and feeds it.
 * Order: `mem.qemu.incoming` (destination, starts the receiver), then `mem.qemu.relay` (source, opens the stream
 * against it), then QMP `migrate` to the relay's socket, then `mem.qemu.resume` once the source has completed.
 * Post-copy: `postcopy` at the destination, `returnPath` at the relay, `postcopy-ram` on the source QEMU; after
 * `migrate-start-postcopy`, `mem.qemu.resume` runs the destination once it holds the device state (source
 * `postcopy-active`), while the rest of the RAM arrives or is asked for over the return path.
 */
export const QemuRelayVerb = {
  /** memory-precopy: listen on a unix socket for QEMU's `migrate` and relay the stream to the destination. */
  Open: 'mem.qemu.relay',
  Status: 'mem.qemu.relay.status',
  /** Stop relaying (QEMU's migration then fails and its guest runs on); idempotent. */
  Close: 'mem.qemu.relay.close',
} as const;
export type QemuRelayVerb = (typeof QemuRelayVerb)[keyof typeof QemuRelayVerb];

export const QemuIncomingVerb = {
  /** delta-apply: start the destination QEMU on the migration's image, paused on `-incoming`, and feed it. */
  Start: 'mem.qemu.incoming',
  Status: 'mem.qemu.incoming.status',
  /** delta-apply: once the stream is loaded, `cont` and `announce-self`. */
  Resume: 'mem.qemu.resume',
  /** delta-apply: stop the feed and the destination QEMU; a destination that never ran never will. Idempotent. */
  Abort: 'mem.qemu.incoming.abort',
} as const;
export type QemuIncomingVerb = (typeof QemuIncomingVerb)[keyof typeof QemuIncomingVerb];

export const QEMU_MACHINES = ['q35', 'pc'] as const;
export const QEMU_ACCELERATORS = ['tcg', 'kvm'] as const;
/** An absolute path of printable characters (no NUL or control characters reach QEMU's command line). */
const ABSOLUTE_PATH = /^\/[\x20-\x7e]{0,4095}$/;
/** A kernel command line: printable ASCII. */
const KERNEL_APPEND = /^[\x20-\x7e]{0,2048}$/;

export class OpenQemuRelayRequest {
  @IsUUID()
  migrationId!: string;

  /** Bytes of QEMU's stream in flight over the WAN (default: two bandwidth-delay products and 1 MiB, RTT measured). */
  @IsOptional()
  @IsInt()
  @Min(64 * 1024)
  @Max(2 ** 30)
  windowBytes?: number;

  /** Bandwidth budget of the stream in bits per second; 0 or absent: the link's own pace. */
  @IsOptional()
  @IsInt()
  @Min(0)
  bandwidthBps?: number;

  /**
   * Carry the destination QEMU's return path back into the source QEMU's socket: post-copy's page requests (the
   * destination was started with `postcopy`). Default false: pre-copy is one-way.
   */
  @IsBoolean()
  returnPath: boolean = false;
}

export interface OpenQemuRelayReply {
  migrationId: string;
  /** For the source QEMU: `migrate` with `uri: unix:<socketPath>`. */
  socketPath: string;
  windowBytes: number;
  /** Round trip to the destination's receiver, measured when the relay opened (ms). */
  rttMs: number;
}

export interface QemuRelayStatusReply {
  migrationId: string;
  socketPath: string;
  windowBytes: number;
  /** Bytes read from QEMU's socket; of those, framed and handed to the stream; frame payload bytes (after zstd). */
  qemuBytes: number;
  framedBytes: number;
  frameBytes: number;
  frames: number;
  compressedFrames: number;
  /** Times (and ms in all) the socket was not read because the stream's window was full: the WAN's pace. */
  readStalls: number;
  readStalledMs: number;
  /** QEMU connected; QEMU closed its end (its stream is whole). */
  connected: boolean;
  qemuClosed: boolean;
  /** Bytes the stream sender put on NATS (headers and re-sends included), of which re-sent. */
  senderBytes: number;
  resentBytes: number;
  /** Bytes of the destination QEMU's return path written into the source QEMU's socket (0 without `returnPath`). */
  returnBytes: number;
  /** The whole stream is durable at the destination. */
  done: boolean;
  /** The relay failed or was closed before its end (`error` says why). */
  failed: boolean;
  /** `mem.qemu.relay.close` was called. */
  closed: boolean;
  /** Digest segments of QEMU's stream sent so far (the last one with the End). */
  digestSegments: number;
  /** sha256 over those segments' digests, in order: the destination's feed reports the same when all matched. */
  streamSha256: string;
  /** From QEMU's connection (and from its close) to the last frame durable at the destination (ms), once done. */
  streamMs?: number;
  tailMs?: number;
  error?: WireError;
}

/**
 * The destination guest's NIC on a tap device in a network namespace at its site, QEMU running inside it (the
 * source's NIC was on the same kind of network: a bridge whose gateway address and MAC are the same at both sites).
 */
export class QemuTapNetworkSpec {
  /** The network namespace QEMU runs in (`ip netns exec`). */
  @Matches(/^[\w.-]{1,64}$/)
  netns!: string;

  /** The tap device there, made beforehand (e.g. on the site's bridge). */
  @Matches(/^[\w.-]{1,15}$/)
  tap!: string;

  /** The NIC's MAC: the source's. */
  @Matches(/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/)
  mac!: string;
}

export class StartQemuIncomingRequest {
  @IsUUID()
  migrationId!: string;

  /** The image delta-apply holds for this migration (`disk.prepare`'s path); absent: that one. Opened in place. */
  @IsOptional()
  @Matches(ABSOLUTE_PATH)
  diskPath?: string;

  @IsInt()
  @Min(16)
  @Max(4 * 1024 * 1024)
  ramMiB!: number;

  /** The guest's kernel and initrd at this site: the source's launch spec. */
  @Matches(ABSOLUTE_PATH)
  kernel!: string;

  @Matches(ABSOLUTE_PATH)
  initrd!: string;

  /** Kernel command line (default `console=ttyS0 panic=-1`). */
  @IsOptional()
  @Matches(KERNEL_APPEND)
  append?: string;

  @IsIn(QEMU_MACHINES)
  machine: (typeof QEMU_MACHINES)[number] = 'q35';

  /** The accelerator the source runs under (QEMU does not migrate between KVM and TCG reliably). */
  @IsIn(QEMU_ACCELERATORS)
  accel: (typeof QEMU_ACCELERATORS)[number] = 'tcg';

  @IsInt()
  @Min(1)
  @Max(64)
  cpus: number = 1;

  /** Host port on 127.0.0.1 forwarded to the guest's `guestPort`; 0 or absent: a free one. */
  @IsOptional()
  @IsInt()
  @Min(0)
  @Max(65535)
  servicePort?: number;

  @IsInt()
  @Min(1)
  @Max(65535)
  guestPort: number = 7777;

  /**
   * Post-copy may come: the destination QEMU gets capability `postcopy-ram`, its return path is sent back to the
   * relay (open it with `returnPath`), and it counts as loaded once it holds the device state (`postcopy-active`,
   * `paused`), with RAM still to arrive. Default false.
   */
  @IsBoolean()
  postcopy: boolean = false;

  /**
   * The guest's NIC on a tap in a network namespace instead of QEMU's user-mode network (no port forwarded: the
   * reply's `servicePort` is 0). Default absent: user-mode, `servicePort` forwarded to `guestPort`.
   */
  @IsOptional()
  @NestedDto(() => QemuTapNetworkSpec)
  network?: QemuTapNetworkSpec;
}

export interface StartQemuIncomingReply {
  migrationId: string;
  diskPath: string;
  /** Host port (127.0.0.1) the guest's service answers on once it runs; 0 for a guest on a tap (`network`). */
  servicePort: number;
  pid: number;
  /** QEMU's run state (`inmigrate`). */
  status: string;
  /**
   * A QMP monitor of the destination QEMU for observers on this host (tools, tests); delta-apply keeps its own.
   * Valid while the QEMU lives; whoever connects shares the QEMU with delta-apply, so it should only look.
   */
  monitorSocket: string;
}

export interface QemuSinkStatus {
  /** Bytes of QEMU's stream written to the destination QEMU's incoming socket. */
  bytesWritten: number;
  frames: number;
  /** Frame payload bytes as they arrived (compressed where the source compressed). */
  payloadBytes: number;
  connected: boolean;
  /** The last frame was written and the socket's write side closed. */
  ended: boolean;
  /** Bytes the destination QEMU wrote back (its return path) sent to the relay (0 unless started with `postcopy`). */
  returnBytes: number;
  /** Why sending the return path back broke, if it did (post-copy then stalls on the pages it asks for). */
  returnPathError?: string;
  /** The stream is over: ended and acknowledged, or failed (`error`). */
  done: boolean;
  /** Stream bytes checked against the relay's digests (sha256 per segment of QEMU's stream, sent in band). */
  verifiedBytes: number;
  /** The End came with the last segment's digest and it matched: the destination holds exactly what QEMU wrote. */
  endVerified: boolean;
  /** sha256 over the checked segments' digests, in order: the relay's `streamSha256` once both are whole. */
  streamSha256: string;
  error?: WireError;
}

export interface QemuIncomingStatusReply {
  migrationId: string;
  diskPath: string;
  servicePort: number;
  pid: number;
  /** The destination QEMU's QMP monitor for observers on this host (as in StartQemuIncomingReply). */
  monitorSocket: string;
  /** Started with `postcopy`. */
  postcopy: boolean;
  /** QEMU's run state: `inmigrate` while loading, `paused` once loaded, `running` after resume; `exited`, `aborted`. */
  status: string;
  running: boolean;
  /** The destination's `query-migrate` status (`active`, `postcopy-active`, `completed`, `failed`), while QEMU runs. */
  migrationStatus?: string;
  /**
   * The guest waits paused for `mem.qemu.resume` (or runs already): the whole stream is loaded, or, when started
   * with `postcopy`, the device state is (`postcopy-active`), the rest of the RAM still to come.
   */
  loaded: boolean;
  resumed: boolean;
  aborted: boolean;
  /** Epoch ms of the resume. */
  resumedAt?: number;
  sink: QemuSinkStatus;
}

export class ResumeQemuRequest {
  @IsUUID()
  migrationId!: string;

  /** How long to wait for the destination to load the stream (in post-copy: the device state) before `cont` (ms). */
  @IsInt()
  @Min(0)
  @Max(300_000)
  loadTimeoutMs: number = 30_000;

  /** Rounds of `announce-self` after `cont` (0: none). */
  @IsInt()
  @Min(0)
  @Max(20)
  announceRounds: number = 5;
}

export interface ResumeQemuReply {
  migrationId: string;
  /** QEMU's run state after `cont` (`running`). */
  status: string;
  /** Epoch ms when `cont` was answered. */
  resumedAt: number;
  /** Waiting for the load to finish, and `cont` (ms); 0 for a repeated request. */
  loadWaitMs: number;
  contMs: number;
  /** Steps after `cont` that failed without failing the resume (announce-self). */
  warnings: string[];
}

export class AbortQemuIncomingRequest {
  @IsUUID()
  migrationId!: string;

  /** Also stop a destination that already runs (the source then holds no running copy): refused otherwise. */
  @IsBoolean()
  stopRunning: boolean = false;
}

export interface AbortQemuIncomingReply {
  migrationId: string;
  /** This request stopped a QEMU (false for a repeat). */
  stopped: boolean;
  /** The stopped destination had run (`stopRunning`). */
  wasRunning: boolean;
}

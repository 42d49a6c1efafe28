import type { QemuTapNetwork, QmpClient } from '@wanmig/hypervisor';
import type { DiskMigrationReport } from '@wanmig/protocol';
import type { QemuRelayStatusReply, QemuSinkStatus } from '@wanmig/protocol';
import type { BootGuestOptions } from '@wanmig/testing';
import type { CounterProbeReport } from './counter.prober.js';
import { DEFAULT_FINALIZE_TIMEOUT_MS } from './disk-path.client.js';
import type { QemuMigrationStage } from './qemu-migration.errors.js';

/** The contracts of runWanmigQemuMigration: its options, what it reports, its defaults. */

export const DEFAULT_QEMU_DOWNTIME_MS = 300;
/** The disk's share of the budget once it only keeps in step (as the orchestrator does); the memory gets the rest. */
export const DISK_SHARE_DURING_MEMORY = 0.2;
/** The link rate the memory window is sized for when no budget is given (the demo WAN's). */
export const ASSUMED_LINK_BPS = 200e6;
export const DEFAULT_QEMU_MIGRATION_TIMEOUTS = {
  /** Bulk copy of the disk until it holds in step. */
  holdingMs: 300_000,
  /** QEMU's pre-copy until it stops the guest. */
  memoryMs: 300_000,
  finalizeMs: DEFAULT_FINALIZE_TIMEOUT_MS,
  /** From `migrate-continue` to the destination loaded and paused. */
  completionMs: 60_000,
  /** The destination's first answer after `cont`. */
  resumeMs: 30_000,
  /** Each step of the rollback. */
  rollbackMs: 15_000,
};

/** The guest at the destination: delta-apply started its QEMU and owns it. */
export interface QemuDestination {
  readonly pid: number;
  /** Host port (127.0.0.1) of the guest's service; 0 for a guest on a tap (reached at its own address). */
  readonly servicePort: number;
  /** The destination QEMU's monitor socket, for observers (delta-apply holds its own QMP connection). */
  readonly qmpSocket: string;
  readonly disk: string;
  /** Stops the destination QEMU through delta-apply (`mem.qemu.incoming.abort` with `stopRunning`). Idempotent. */
  stop(): Promise<void>;
}

/** What the runner tells `onStage` about the migration under way (progress displays; tests that inject faults). */
export interface QemuMigrationView {
  migrationId: string;
  stage: QemuMigrationStage;
  /** The destination QEMU, once started. */
  destination?: QemuDestination;
  /** Bytes QEMU has written into the memory relay so far. */
  memoryBytes(): number;
}

export interface QemuWanmigOptions {
  migrationId?: string;
  /** The downtime budget, ms (300): the disk's drain budget; QEMU's `downtime-limit` gets a share of it. */
  downtimeMs?: number;
  /** QEMU's own `downtime-limit`, ms (default: a third of `downtimeMs`, see qemuShareOf). */
  qemuDowntimeLimitMs?: number;
  /**
   * One budget for the whole migration, bits/s: the disk gets all of it for its bulk copy, then a fifth while it
   * holds in step, the memory stream the rest. Absent: the link's own pace.
   */
  bandwidthBps?: number;
  /**
   * Test-only: in the pause, after the final drain, sha256 the source disk and the destination image (and read the
   * guest's counter file on both); `diskEqualAtPause` reports the outcome. Also makes disk-transfer verify region
   * digests in its finalize. Both lengthen the pause.
   */
  verifyDiskInPause?: boolean;
  /**
   * Steering QEMU's pre-copy. `autoConverge` (default true): QEMU slows the guest's vCPUs, step by step, while its
   * rounds do not converge, so a guest that dirties memory faster than the WAN carries it still moves (libvirt's
   * `--auto-converge`). `xbzrleCacheBytes` (default off): QEMU's XBZRLE delta cache for re-sent pages.
   * `postcopyAfterMs` (default off): if pre-copy has not converged after this long, switch to post-copy: the guest
   * runs at the destination at once and its remaining pages follow (asked for on a fault, over the relayed return
   * path). Opt-in, as in libvirt: once the destination runs, a broken link loses the guest.
   */
  steering?: { autoConverge?: boolean; xbzrleCacheBytes?: number; postcopyAfterMs?: number };
  /**
   * Test-only: with both ends stopped, before the destination runs, dump the guest's RAM at each (`pmemsave`) and
   * compare them by sha256 (`ramAtPause`). Lengthens the pause; pre-copy only.
   */
  verifyRamInPause?: boolean;
  /** An open QMP connection to the source (QEMU serves one client per socket); by default the runner opens its own. */
  sourceQmp?: QmpClient;
  /** Destination QEMU options beyond disk, RAM and sockets; they must describe the same machine as the source's. */
  destination?: Pick<
    BootGuestOptions,
    'accel' | 'machine' | 'kernel' | 'initrd' | 'hotMiB' | 'diskKiB' | 'servicePort' | 'stopTimeoutMs'
  > & {
    /** The kernel command line (default: the test guest's as bootGuest builds it from hotMiB and diskKiB). */
    append?: string;
    /**
     * The destination's NIC on a tap in a network namespace at site B, QEMU running inside it (see
     * QemuTapNetwork); the source's NIC must be on the same kind of network, with the same MAC. Default: user-mode
     * networking with a forwarded port, as bootGuest's.
     */
    network?: QemuTapNetwork;
  };
  /**
   * Runs with the destination loaded and still paused, just before its `cont` (its time is part of the pause): e.g.
   * a snapshot of the destination disk, so its state at the switch can be compared with the source afterwards.
   */
  beforeCont?: (destinationQmp: QmpClient) => Promise<void>;
  /** Stop the source QEMU once the guest runs at the destination (default true); otherwise it stays `postmigrate`. */
  stopSource?: boolean;
  /** Bytes of QEMU's stream in flight over the WAN (default two bandwidth-delay products and 1 MiB). */
  windowBytes?: number;
  /** How often the client asks the guest its counter, ms (20). */
  probeIntervalMs?: number;
  /**
   * A client polls the guest's counter service on the source's, then the destination's, forwarded port (default
   * true): `probe` and `clientPauseMs`. Off for a guest whose port is not forwarded to this host (a NIC on a tap in
   * a namespace): those figures are then zeros, and the caller measures from a client on the guest's network.
   */
  probeCounter?: boolean;
  /**
   * Runs inside the pause, after the last bytes and checks and just before the destination's resume (the point of
   * no return): e.g. moving the VM's route to site B (net-redirect's `net.route.move`), so that the guest's first
   * packets at B find the route there. What it throws rolls the migration back, before the destination ever ran;
   * the hook undoes its own step. Its time is part of the pause.
   */
  beforeResume?: (view: { migrationId: string; destination: QemuDestination }) => Promise<void>;
  timeouts?: Partial<typeof DEFAULT_QEMU_MIGRATION_TIMEOUTS>;
  onStage?: (view: QemuMigrationView) => void;
  log?: (line: string) => void;
}

/** Where the pause went, in order: the mirror goes, then the disk's drain and QEMU's completion side by side. */
export interface QemuPauseBreakdown {
  /** The mirror job cancelled and its NBD node deleted. */
  mirrorCancelMs: number;
  /** After the mirror: disk.finalize, the last dirty blocks durable at the destination (and its digest check). */
  finalizeMs: number;
  /** After the mirror, alongside the disk: `migrate-continue` until QEMU reports `completed`. */
  completionMs: number;
  /** After the mirror: both the disk drained and the destination QEMU holding the whole stream. */
  loadedMs: number;
  /** sha256 of both images and their counter files (verifyDiskInPause only). */
  verifyMs: number;
  /** Then until the destination answered `cont`. */
  activateMs: number;
  totalMs: number;
}

export interface QemuWanmigResult {
  migrationId: string;
  /** The guest, now running at site B (the caller checks it and stops it). */
  destination: QemuDestination;
  destPath: string;
  /** From the disk export to the destination's `cont` answered. */
  totalSeconds: number;
  /** The longest gap between answers a client polling the guest's counter saw. */
  clientPauseMs: number;
  probe: CounterProbeReport;
  pause: QemuPauseBreakdown;
  /** QEMU's own figures (source `query-migrate` at completion). */
  qemu: {
    totalTimeMs?: number;
    downtimeMs?: number;
    setupTimeMs?: number;
    ramTransferred?: number;
    ramTotal?: number;
    dirtySyncCount?: number;
    mbps?: number;
  };
  /** Bytes through the WAN emulator during the migration, control traffic included. */
  wan: { aToB: number; bToA: number; total: number };
  disk: {
    report: DiskMigrationReport;
    /** Seconds from the export until the migration held the destination in step. */
    holdingAfterSeconds: number;
  };
  memory: {
    /** memory-precopy's and delta-apply's last status of the stream. */
    relay: QemuRelayStatusReply;
    sink: QemuSinkStatus;
    /** Bytes the stream sender put on NATS (frames, headers and re-sends included). */
    senderBytes: number;
    resentBytes: number;
    windowBytes: number;
  };
  /** verifyDiskInPause: both images hashed in the pause, after the final drain. */
  /** The migration switched to post-copy (steering.postcopyAfterMs): the guest ran at B before all its RAM was there. */
  postcopy: boolean;
  diskEqualAtPause?: boolean;
  /** verifyRamInPause: the guest's RAM at both ends before the destination ran. */
  ramAtPause?: { sourceSha256: string; destinationSha256: string; equal: boolean; bytes: number };
  diskAtPause?: {
    sourceSha256: string;
    destinationSha256: string;
    sourceCounter?: number;
    destinationCounter?: number;
  };
  /** The source's run state once the guest ran at the destination (`postmigrate`), and whether it was stopped. */
  sourceStatusAfter: string;
  sourceStopped: boolean;
  /** Cleanup steps after the switch that failed (the migration itself succeeded). */
  warnings: string[];
}

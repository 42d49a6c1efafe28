/** How a run ended: only a `completed` run's figures mean anything; `not-run` figures are NaN. */
export const QemuRunOutcome = { Completed: 'completed', Failed: 'failed', NotRun: 'not-run' } as const;
export type QemuRunOutcome = (typeof QemuRunOutcome)[keyof typeof QemuRunOutcome];

/** One way of moving the same running QEMU guest over the same emulated WAN (`wanmig bench qemu`). */
export interface QemuRunResult {
  /** `qemu` (libvirt's way, defaults), `qemuTuned` (multifd + zstd, xbzrle), `wanmig`. */
  name: 'qemu' | 'qemuTuned' | 'wanmig';
  /** From the start of the move (disk mirror or bulk copy) until the guest runs at the destination. */
  totalSeconds: number;
  /** Longest gap between answers a client polling the guest's counter saw. */
  downtimeMs: number;
  /** Bytes the WAN emulator carried, both directions. */
  wireBytes: number;
  /** The guest runs at the destination, its counter went on, and its disk equals the source's at pause. */
  verified: boolean;
  /** Each check of `verified` on its own; `null`: not made (then `verified` is false, but nothing was found wrong). */
  checks?: { running: boolean; counter: boolean; disk: boolean | null; stream?: boolean };
  /** What QEMU itself reported (total-time, downtime, ram.transferred), where it applies. */
  qemu?: { totalTimeMs?: number; downtimeMs?: number; ramTransferred?: number };
  /** Absent means `completed`. A failed or skipped run says why in `notes`. */
  outcome?: QemuRunOutcome;
  notes?: string[];
}

export interface QemuBenchOptions {
  ramMiB: number;
  delayMs: number;
  bandwidthBps: number;
  /** Let the guest run its workload this long at the source before the move. */
  warmupMs: number;
  /**
   * (c) only: migrate with `verify: false` (the product's default is true: both images' digests compared in the
   * pause, which lengthens it). QEMU's stream is checked by its digests either way; without the disk check (c) is
   * never `verified`.
   */
  noVerify?: boolean;
  /** Which runs to make (default all three); the others are reported `not-run`, and ratios need both sides. */
  runs?: Array<QemuRunResult['name']>;
}

export interface QemuBenchResult {
  options: QemuBenchOptions;
  accel: 'kvm' | 'tcg';
  runs: { qemu: QemuRunResult; qemuTuned: QemuRunResult; wanmig: QemuRunResult };
  /** wanmig / baseline for each figure (c/a and c/b). */
  ratios: {
    vsQemu: { totalSeconds: number; downtimeMs: number; wireBytes: number };
    vsQemuTuned: { totalSeconds: number; downtimeMs: number; wireBytes: number };
  };
}

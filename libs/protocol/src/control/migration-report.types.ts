/**
 * What the source services report about a disk or memory migration: the payload of their progress
 * and completion events, read by the CLI, the orchestrator and anyone subscribed.
 */

/** How much the guest's writes were slowed: the report shows it. */
export interface ThrottleStats {
  engaged: boolean;
  /** Guest write rate the throttle allows (bytes/s) while engaged. */
  limitBytesPerSecond: number | null;
  writesDelayed: number;
  totalDelayMs: number;
  /** Bytes written by the guest, and when the throttle first engaged. */
  guestBytes: number;
  engagedAtMs: number | null;
}

export const DiskPhase = {
  Preparing: 'preparing',
  Bulk: 'bulk',
  CatchUp: 'catch-up',
  /** Converged; keeps the destination in step until `disk.finalize` (a migration started with `hold`). */
  Holding: 'holding',
  FinalDrain: 'final-drain',
  Verify: 'verify',
  Done: 'done',
  Failed: 'failed',
} as const;
export type DiskPhase = (typeof DiskPhase)[keyof typeof DiskPhase];

export interface DiskProgress {
  migrationId: string;
  phase: DiskPhase;
  round: number;
  sizeBytes: number;
  /** Bytes of the disk the bulk pass has covered. */
  bulkBytes: number;
  dirtyBytes: number;
  /** Disk bytes sent so far (before the codec), and what they cost in frames. */
  rawBytesSent: number;
  frameBytesSent: number;
  resentBytes: number;
  elapsedSeconds: number;
  throttle: ThrottleStats;
  /** While holding: what is dirty would drain within the downtime budget (the pause may start). */
  inStep?: boolean;
}

export interface CatchUpRound {
  round: number;
  blocks: number;
  rawBytes: number;
  seconds: number;
  /** Dirty bytes left when the round ended (what the next round or the final drain must send). */
  dirtyAfter: number;
}

export interface DiskMigrationReport {
  migrationId: string;
  sizeBytes: number;
  blockSize: number;
  destPath: string;
  resumed: boolean;
  rawBytesSent: number;
  frameBytesSent: number;
  resentBytes: number;
  byEncoding: Record<string, { pages: number; rawBytes: number; encodedBytes: number }>;
  bulkSeconds: number;
  rounds: CatchUpRound[];
  converged: boolean;
  finalDrainBytes: number;
  /** Writes frozen until the last block was durable at the destination. */
  downtimeMs: number;
  verifyMs: number;
  verified: boolean | null;
  totalSeconds: number;
  throttle: ThrottleStats;
}

/** Memory pre-copy policies: wanmig's, and the KVM-style baseline. */
export const PolicyKind = { Smart: 'smart', Kvm: 'kvm' } as const;
export type PolicyKind = (typeof PolicyKind)[keyof typeof PolicyKind];

export interface RoundSample {
  round: number;
  /** Dirty bytes found at the start of the round (what it set out to send). */
  dirtyBytes: number;
  rawBytes: number;
  wireBytes: number;
  seconds: number;
  /** Bytes of this round sent as zero extents (they cost nothing; dirty pages rarely are zero). */
  zeroRawBytes: number;
  /** Pages of this round that had been sent in an earlier round. */
  resentPages: number;
  pages: number;
}

export const StopReason = {
  FitsBudget: 'fits-budget',
  RoundCap: 'round-cap',
  NoProgress: 'no-progress',
  ThrottleCeiling: 'throttle-ceiling',
} as const;
export type StopReason = (typeof StopReason)[keyof typeof StopReason];

export const MemoryPhase = {
  Preparing: 'preparing',
  Precopy: 'precopy',
  StopAndCopy: 'stop-and-copy',
  /**
   * Paused, everything at the destination and checked there, waiting for the caller's go (`mem.proceed`) before
   * the destination runs the VM (`holdBeforeResume`): the last moment a rollback leaves nothing behind.
   */
  Holding: 'holding',
  Resuming: 'resuming',
  Done: 'done',
  RolledBack: 'rolled-back',
} as const;
export type MemoryPhase = (typeof MemoryPhase)[keyof typeof MemoryPhase];

export interface MemoryProgress {
  migrationId: string;
  phase: MemoryPhase;
  round: number;
  ramBytes: number;
  dirtyBytes: number;
  rawBytesSent: number;
  frameBytesSent: number;
  throttlePercent: number;
  elapsedSeconds: number;
}

export interface MemoryMigrationReport {
  migrationId: string;
  policy: PolicyKind;
  codec: boolean;
  ramBytes: number;
  rounds: RoundSample[];
  stopReason: StopReason;
  estimatedDowntimeMs: number;
  throttlePercent: number;
  finalPages: number;
  deviceStateBytes: number;
  rawBytesSent: number;
  frameBytesSent: number;
  resentBytes: number;
  byEncoding: Record<string, { pages: number; rawBytes: number; encodedBytes: number }>;
  /** From pause at the source to the destination's reply that the VM runs (the engine's view). */
  pausedMs: number;
  /** Epoch milliseconds the source was asked to pause. */
  pausedAt: number;
  /** Of the pause: waiting in `holding` for the caller's go (`holdBeforeResume`). */
  holdMs?: number;
  precopySeconds: number;
  totalSeconds: number;
  destination: { serviceAddress: string; resumedAt: number };
  /** The destination checked its RAM against the source's at pause before running the VM. */
  ramVerified: boolean;
  /** Milliseconds of the pause the destination spent hashing its RAM (0 when not asked). */
  ramCheckMs: number;
  /** What the source answered at pause to the requested queries. */
  answersAtPause: Record<string, string>;
  /** What the destination answered from the received RAM before it ran. */
  answersAtDestination: Record<string, string>;
  /** The disk migration finalized during the pause (`diskMigrationId`), with its own figures. */
  disk?: DiskMigrationReport;
  /** Milliseconds of the pause spent finalizing the disk (its final drain, and its verify when asked). */
  diskFinalizeMs?: number;
}

import type { ThrottleStats } from './write.throttle.js';

export const DiskPhase = {
  Preparing: 'preparing',
  Bulk: 'bulk',
  CatchUp: 'catch-up',
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

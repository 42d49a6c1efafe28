import type { PolicyKind, RoundSample, StopReason } from './convergence.policy.js';

export const MemoryPhase = {
  Preparing: 'preparing',
  Precopy: 'precopy',
  StopAndCopy: 'stop-and-copy',
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
  precopySeconds: number;
  totalSeconds: number;
  destination: { serviceAddress: string; resumedAt: number };
  /** The destination checked its RAM against the source's at pause before running the VM. */
  ramVerified: boolean;
  /** What the source answered at pause to the requested queries. */
  answersAtPause: Record<string, string>;
  /** What the destination answered from the received RAM before it ran. */
  answersAtDestination: Record<string, string>;
}

import { type RngState } from './snapshot.rng.js';

/** Where a workload stands: what a migrated guest needs to go on exactly as the source would have. */
export interface WorkloadCursor {
  /** Ticks the main loop has run (the counter in RAM moves with it, but lives in RAM). */
  ticks: number;
  ramRng: RngState;
  kvRng: RngState;
  diskRng: RngState;
  /** Token bucket levels (may be slightly negative: debt of the last item). */
  ramTokens: number;
  kvTokens: number;
  diskTokens: number;
  pageWrites: number;
  kvUpdates: number;
  diskWrites: number;
}

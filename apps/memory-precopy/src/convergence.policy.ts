import { PolicyKind, StopReason, type RoundSample } from '@wanmig/protocol';

/**
 * When to stop iterating pre-copy rounds. Two policies share one input:
 * - `smart` (wanmig; CloudNet's smart stop-and-copy, Ibrahim et al.): stop as soon as what is left
 *   would drain within the downtime budget; when rounds stop paying (the dirty set no longer
 *   shrinks, or most of what a round sends are pages sent before, or the guest dirties faster than
 *   the link drains) throttle the guest (auto-converge: 20 %, then +10 % steps, as QEMU does) and
 *   keep going; give up iterating only at the throttle ceiling or the round cap.
 * - `kvm` (the baseline): stop when the estimate fits, after 30 rounds, or after two rounds in a
 *   row whose dirty set grew; never throttle.
 */

export interface PolicyInput {
  /** Rounds done so far (round 1 is the full pass). */
  rounds: RoundSample[];
  /** Dirty bytes waiting now. */
  dirtyBytes: number;
  downtimeMs: number;
  /** Frame bytes per second the link carried in the last round(s). */
  wireBytesPerSecond: number;
  /** Frame bytes per page byte, recently. */
  wirePerRaw: number;
  rttMs: number;
  throttlePercent: number;
}

export type PolicyDecision =
  | { action: 'continue' }
  | { action: 'stop'; reason: StopReason; estimatedDowntimeMs: number }
  | { action: 'throttle'; percent: number; why: string };

export const MAX_ROUNDS = 30;
export const THROTTLE_INITIAL = 20;
export const THROTTLE_STEP = 10;
export const THROTTLE_MAX = 99;
/** A round must shrink the dirty set below this share of the previous one to count as progress. */
const PROGRESS_SHARE = 0.95;
/** Ibrahim et al.: most of a round being re-sent pages means iterating no longer pays. */
const RESENT_SHARE = 0.9;

export function estimateDowntimeMs(
  input: Pick<PolicyInput, 'dirtyBytes' | 'wirePerRaw' | 'wireBytesPerSecond' | 'rttMs'>,
): number {
  return (input.dirtyBytes * input.wirePerRaw * 1000) / Math.max(1, input.wireBytesPerSecond) + input.rttMs;
}

export function decide(kind: PolicyKind, input: PolicyInput): PolicyDecision {
  const estimatedDowntimeMs = estimateDowntimeMs(input);
  if (estimatedDowntimeMs <= input.downtimeMs)
    return { action: 'stop', reason: StopReason.FitsBudget, estimatedDowntimeMs };
  const n = input.rounds.length;
  if (n >= MAX_ROUNDS) return { action: 'stop', reason: StopReason.RoundCap, estimatedDowntimeMs };
  const last = input.rounds[n - 1];
  const previous = input.rounds[n - 2];
  if (kind === PolicyKind.Kvm) {
    // Two rounds in a row with growing data: the dirty set grew at the start of each of the last
    // two rounds and is still growing now.
    const grew = (a: number, b: number) => b > a;
    if (n >= 2 && grew(previous.dirtyBytes, last.dirtyBytes) && grew(last.dirtyBytes, input.dirtyBytes)) {
      return { action: 'stop', reason: StopReason.NoProgress, estimatedDowntimeMs };
    }
    return { action: 'continue' };
  }
  // Round 1 sends all of RAM: judge progress from round 2 on.
  if (n < 2) return { action: 'continue' };
  const noProgress = input.dirtyBytes > PROGRESS_SHARE * last.dirtyBytes;
  const mostlyResent = last.pages > 0 && last.resentPages / last.pages > RESENT_SHARE;
  const dirtyRate = input.dirtyBytes / Math.max(last.seconds, 0.001);
  const drainRate = input.wireBytesPerSecond / Math.max(input.wirePerRaw, 0.01);
  const outrunning = dirtyRate > drainRate;
  if (noProgress || (mostlyResent && outrunning)) {
    if (input.throttlePercent >= THROTTLE_MAX) {
      return { action: 'stop', reason: StopReason.ThrottleCeiling, estimatedDowntimeMs };
    }
    const percent =
      input.throttlePercent === 0 ? THROTTLE_INITIAL : Math.min(THROTTLE_MAX, input.throttlePercent + THROTTLE_STEP);
    const why = noProgress ? 'dirty set not shrinking' : 'mostly re-sent pages while the guest outruns the link';
    return { action: 'throttle', percent, why };
  }
  return { action: 'continue' };
}

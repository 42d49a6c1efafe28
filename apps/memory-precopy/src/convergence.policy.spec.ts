import { describe, expect, it } from 'vitest';
import { PolicyKind, StopReason, type RoundSample } from '@wanmig/protocol';
import { decide, MAX_ROUNDS, THROTTLE_MAX, type PolicyInput } from './convergence.policy.js';

const MB = 1_000_000;
const round = (n: number, dirtyBytes: number, over: Partial<RoundSample> = {}): RoundSample => ({
  round: n,
  dirtyBytes,
  rawBytes: dirtyBytes,
  wireBytes: dirtyBytes / 2,
  seconds: 1,
  resentPages: 0,
  zeroRawBytes: 0,
  pages: dirtyBytes / 4096,
  ...over,
});
const input = (over: Partial<PolicyInput>): PolicyInput => ({
  rounds: [round(1, 1000 * MB)],
  dirtyBytes: 50 * MB,
  downtimeMs: 300,
  wireBytesPerSecond: 25 * MB,
  wirePerRaw: 0.5,
  rttMs: 100,
  throttlePercent: 0,
  ...over,
});

describe('convergence policy', () => {
  it('stops when what is left drains within the budget', () => {
    const d = decide(PolicyKind.Smart, input({ dirtyBytes: 4 * MB })); // 4 MB * 0.5 / 25 MB/s = 80 ms + RTT
    expect(d).toMatchObject({ action: 'stop', reason: StopReason.FitsBudget });
  });

  it('keeps iterating while rounds shrink the dirty set', () => {
    const rounds = [round(1, 1000 * MB), round(2, 100 * MB)];
    expect(decide(PolicyKind.Smart, input({ rounds, dirtyBytes: 30 * MB })).action).toBe('continue');
  });

  it('throttles when the dirty set stops shrinking, stepping up, and stops at the ceiling', () => {
    const rounds = [round(1, 1000 * MB), round(2, 100 * MB)];
    expect(decide(PolicyKind.Smart, input({ rounds, dirtyBytes: 99 * MB }))).toMatchObject({
      action: 'throttle',
      percent: 20,
    });
    expect(decide(PolicyKind.Smart, input({ rounds, dirtyBytes: 99 * MB, throttlePercent: 20 }))).toMatchObject({
      action: 'throttle',
      percent: 30,
    });
    expect(
      decide(PolicyKind.Smart, input({ rounds, dirtyBytes: 99 * MB, throttlePercent: THROTTLE_MAX })),
    ).toMatchObject({ action: 'stop', reason: StopReason.ThrottleCeiling });
  });

  it('throttles when most pages are re-sends and the guest outruns the link', () => {
    const rounds = [round(1, 1000 * MB), round(2, 100 * MB, { resentPages: 95, pages: 100, seconds: 1 })];
    // 80 MB dirtied in a 1 s round: faster than 25 MB/s / 0.5 drains.
    expect(decide(PolicyKind.Smart, input({ rounds, dirtyBytes: 80 * MB })).action).toBe('throttle');
  });

  it('stops at the round cap', () => {
    const rounds = Array.from({ length: MAX_ROUNDS }, (_, i) => round(i + 1, 100 * MB - i));
    expect(decide(PolicyKind.Smart, input({ rounds, dirtyBytes: 60 * MB }))).toMatchObject({
      reason: StopReason.RoundCap,
    });
  });

  it('kvm: never throttles; stops after two rounds of growth', () => {
    const growing = [round(1, 100 * MB), round(2, 110 * MB)];
    expect(decide(PolicyKind.Kvm, input({ rounds: growing, dirtyBytes: 120 * MB }))).toMatchObject({
      action: 'stop',
      reason: StopReason.NoProgress,
    });
    const flat = [round(1, 1000 * MB), round(2, 100 * MB)];
    expect(decide(PolicyKind.Kvm, input({ rounds: flat, dirtyBytes: 99 * MB })).action).toBe('continue');
  });
});

import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SwitchoverGate } from './switchover.gate.js';

const timedOut = () => new Error('timed out');

/** How a wait ended: 'go', or the message it failed with. */
function outcome(wait: Promise<void>): Promise<string> {
  return wait.then(
    () => 'go',
    (err: Error) => err.message,
  );
}

describe('SwitchoverGate', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('lets the waiter go on open, answers a repeated open the same, and then refuses to close', async () => {
    const gate = new SwitchoverGate();
    expect(gate.open()).toBe(false); // nobody waits yet: no go to give
    const waited = outcome(gate.wait(1000, timedOut));
    expect(gate.waiting).toBe(true);
    expect(gate.open()).toBe(true);
    expect(gate.open()).toBe(true);
    expect(gate.opened).toBe(true);
    expect(gate.close(new Error('abort'))).toBe(false);
    await vi.advanceTimersByTimeAsync(5000);
    expect(await waited).toBe('go');
  });

  it('fails the waiter on close, and refuses an open after it', async () => {
    const gate = new SwitchoverGate();
    const waited = outcome(gate.wait(1000, timedOut));
    expect(gate.close(new Error('aborted while holding'))).toBe(true);
    expect(gate.open()).toBe(false);
    expect(gate.waiting).toBe(false);
    expect(await waited).toBe('aborted while holding');
  });

  it('times out when nobody decides, and refuses a late open', async () => {
    const gate = new SwitchoverGate();
    const waited = outcome(gate.wait(1000, timedOut));
    await vi.advanceTimersByTimeAsync(999);
    expect(gate.waiting).toBe(true);
    await vi.advanceTimersByTimeAsync(1);
    expect(await waited).toBe('timed out');
    expect(gate.open()).toBe(false);
  });

  it('fails a wait at once when it closed before anyone waited (an abort before the hold)', async () => {
    const gate = new SwitchoverGate();
    expect(gate.close(new Error('aborted earlier'))).toBe(true);
    expect(await outcome(gate.wait(1000, timedOut))).toBe('aborted earlier');
    expect(gate.open()).toBe(false);
  });
});

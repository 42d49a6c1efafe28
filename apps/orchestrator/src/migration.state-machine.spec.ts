import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCode, FORWARD_PHASES, MigrationPhase, type MigrationPhase as Phase } from '@wanmig/protocol';
import { AbortRefusedError, InvalidTransitionError, StaleEpochError } from './errors.js';
import {
  abortStep,
  advanceStep,
  applyTransition,
  canTransition,
  failureStep,
  isPastPointOfNoReturn,
  isRollbackable,
  newMigrationRecord,
  withError,
  withFigures,
  withResumed,
  type MigrationRecord,
} from './migration.state-machine.js';

const T0 = new Date('2030-01-01T00:00:00.000Z');
const later = (seconds: number) => new Date(T0.getTime() + seconds * 1000);

function planned(): MigrationRecord {
  return newMigrationRecord(
    {
      id: randomUUID(),
      vmId: 'vm-1',
      fromSite: 'site-a',
      toSite: 'site-b',
      options: { downtimeMs: 300, policy: 'smart', verify: true },
    },
    T0,
  );
}

/** Walks the forward path up to `phase`. */
function at(phase: Phase): MigrationRecord {
  let record = planned();
  while (record.phase !== phase) record = applyTransition(record, advanceStep(record), later(record.epoch + 1)).record;
  return record;
}

describe('migration state machine', () => {
  it('starts PLANNED at epoch 0 with one history entry', () => {
    const record = planned();
    expect(record.phase).toBe(MigrationPhase.Planned);
    expect(record.epoch).toBe(0);
    expect(record.history).toEqual([{ phase: MigrationPhase.Planned, at: T0.toISOString() }]);
  });

  it('walks the forward path to COMMITTED, one epoch and one history entry per transition', () => {
    const record = at(MigrationPhase.Committed);
    expect(record.history.map((h) => h.phase)).toEqual(FORWARD_PHASES);
    expect(record.epoch).toBe(FORWARD_PHASES.length - 1);
    expect(record.updatedAt).toBe(later(record.epoch).toISOString());
  });

  it('refuses to skip a phase, with CONFLICT, and leaves the record as it was', () => {
    const record = at(MigrationPhase.DiskBulk);
    const before = structuredClone(record);
    const step = { epoch: record.epoch, to: MigrationPhase.MemPrecopy };
    expect(() => applyTransition(record, step, T0)).toThrow(InvalidTransitionError);
    try {
      applyTransition(record, step, T0);
    } catch (err) {
      expect((err as InvalidTransitionError).code).toBe(ErrorCode.Conflict);
    }
    expect(record).toEqual(before);
  });

  it('allows a rollback up to STOP_AND_COPY and none from REDIRECT on', () => {
    const before = FORWARD_PHASES.slice(0, FORWARD_PHASES.indexOf(MigrationPhase.Redirect));
    expect(before.at(-1)).toBe(MigrationPhase.StopAndCopy);
    for (const phase of FORWARD_PHASES) {
      expect(isRollbackable({ phase })).toBe(before.includes(phase));
      expect(canTransition({ phase }, MigrationPhase.RollingBack)).toBe(before.includes(phase));
    }
    const rollingBack = { phase: MigrationPhase.RollingBack };
    expect(canTransition(rollingBack, MigrationPhase.RolledBack)).toBe(true);
    expect(canTransition(rollingBack, MigrationPhase.Committed)).toBe(false);
  });

  it('makes STOP_AND_COPY forward only once the destination has resumed the VM (the point of no return)', () => {
    const paused = at(MigrationPhase.StopAndCopy);
    expect(isRollbackable(paused)).toBe(true);
    expect(isPastPointOfNoReturn(paused)).toBe(false);
    const resumed = withResumed(paused, later(50));
    expect(resumed.epoch).toBe(paused.epoch);
    expect(resumed.destination?.resumed).toBe(true);
    expect(isRollbackable(resumed)).toBe(false);
    expect(isPastPointOfNoReturn(resumed)).toBe(true);
    expect(() => applyTransition(resumed, { epoch: resumed.epoch, to: MigrationPhase.RollingBack }, T0)).toThrow(
      /only forward recovery/,
    );
    // Forward still goes: STOP_AND_COPY → REDIRECT.
    expect(applyTransition(resumed, advanceStep(resumed), T0).record.phase).toBe(MigrationPhase.Redirect);
  });

  it('counts every phase from REDIRECT to before COMMITTED as past the point of no return, and nothing else', () => {
    const past: Phase[] = [MigrationPhase.Redirect, MigrationPhase.Activate];
    for (const phase of Object.values(MigrationPhase)) {
      expect(isPastPointOfNoReturn({ phase })).toBe(past.includes(phase));
    }
  });

  it('aborts before ACTIVATE into ROLLING_BACK then ROLLED_BACK; a second abort is a no-op', () => {
    const record = at(MigrationPhase.MemPrecopy);
    const step = abortStep(record, 'operator');
    expect(step).toEqual({ epoch: record.epoch, to: MigrationPhase.RollingBack, note: 'operator' });
    const rolling = applyTransition(record, step!, T0).record;
    expect(rolling.phase).toBe(MigrationPhase.RollingBack);
    expect(abortStep(rolling)).toBeNull();
    const done = applyTransition(rolling, advanceStep(rolling), T0).record;
    expect(done.phase).toBe(MigrationPhase.RolledBack);
  });

  it('refuses an abort past the point of no return, or when finished, with a typed CONFLICT error', () => {
    const resumed = withResumed(at(MigrationPhase.StopAndCopy), T0);
    expect(() => abortStep(resumed)).toThrow(/destination runs the VM/);
    for (const record of [
      resumed,
      ...[MigrationPhase.Redirect, MigrationPhase.Activate, MigrationPhase.Committed].map(at),
    ]) {
      expect(() => abortStep(record)).toThrow(AbortRefusedError);
      try {
        abortStep(record);
      } catch (err) {
        expect((err as AbortRefusedError).code).toBe(ErrorCode.Conflict);
        expect((err as AbortRefusedError).migrationId).toBe(record.id);
      }
    }
  });

  it('refuses any transition out of a terminal phase', () => {
    const committed = at(MigrationPhase.Committed);
    expect(() => advanceStep(committed)).toThrow(InvalidTransitionError);
    for (const to of Object.values(MigrationPhase)) {
      expect(() => applyTransition(committed, { epoch: committed.epoch, to }, T0)).toThrow(InvalidTransitionError);
    }
    const planned0 = planned();
    const rolledBack = [
      { epoch: 0, to: MigrationPhase.RollingBack },
      { epoch: 1, to: MigrationPhase.RolledBack },
    ].reduce((r, step) => applyTransition(r, step, T0).record, planned0);
    expect(rolledBack.phase).toBe(MigrationPhase.RolledBack);
    expect(() => abortStep(rolledBack)).toThrow(AbortRefusedError);
    expect(() => applyTransition(rolledBack, { epoch: 2, to: MigrationPhase.Preparing }, T0)).toThrow(
      InvalidTransitionError,
    );
  });

  it('is idempotent: the same (epoch → phase) applied twice changes nothing the second time', () => {
    const record = at(MigrationPhase.DiskBulk);
    const step = advanceStep(record);
    const first = applyTransition(record, step, later(100));
    expect(first.changed).toBe(true);
    const second = applyTransition(first.record, step, later(200));
    expect(second.changed).toBe(false);
    expect(second.record).toBe(first.record);
  });

  it('refuses a step computed from an older epoch with StaleEpochError', () => {
    const record = at(MigrationPhase.DiskCatchup);
    expect(() => applyTransition(record, { epoch: record.epoch - 2, to: MigrationPhase.MemPrecopy }, T0)).toThrow(
      StaleEpochError,
    );
  });

  it('turns a failure before the resume into ROLLING_BACK with the error, and none after it', () => {
    const error = { code: ErrorCode.Unavailable, message: 'destination unreachable' };
    for (const phase of [MigrationPhase.DiskBulk, MigrationPhase.StopAndCopy]) {
      const record = at(phase);
      const rolling = applyTransition(record, failureStep(record, error)!, T0).record;
      expect(rolling.phase).toBe(MigrationPhase.RollingBack);
      expect(rolling.error).toEqual(error);
      expect(rolling.history.at(-1)?.note).toBe('destination unreachable');
    }
    expect(failureStep(withResumed(at(MigrationPhase.StopAndCopy), T0), error)).toBeNull();
    expect(failureStep(at(MigrationPhase.Redirect), error)).toBeNull();
    const active = at(MigrationPhase.Activate);
    expect(failureStep(active, error)).toBeNull();
    const recorded = withError(active, error, T0);
    expect(recorded.phase).toBe(MigrationPhase.Activate);
    expect(recorded.epoch).toBe(active.epoch);
    expect(recorded.error).toEqual(error);
  });

  it('merges figures without a transition', () => {
    const record = withFigures(withFigures(planned(), { diskRawBytes: 10 }, T0), { downtimeMs: 120 }, T0);
    expect(record.figures).toEqual({ diskRawBytes: 10, downtimeMs: 120 });
    expect(record.epoch).toBe(0);
  });
});

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
  isRollbackable,
  newMigrationRecord,
  withError,
  withFigures,
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

  it('allows a rollback from every phase before ACTIVATE and none from ACTIVATE on', () => {
    const before = FORWARD_PHASES.slice(0, FORWARD_PHASES.indexOf(MigrationPhase.Activate));
    for (const phase of FORWARD_PHASES) {
      expect(isRollbackable(phase)).toBe(before.includes(phase));
      expect(canTransition(phase, MigrationPhase.RollingBack)).toBe(before.includes(phase));
    }
    expect(canTransition(MigrationPhase.RollingBack, MigrationPhase.RolledBack)).toBe(true);
    expect(canTransition(MigrationPhase.RollingBack, MigrationPhase.Committed)).toBe(false);
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

  it('refuses an abort at or after ACTIVATE with a typed CONFLICT error', () => {
    for (const phase of [MigrationPhase.Activate, MigrationPhase.Committed]) {
      const record = at(phase);
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

  it('turns a failure before ACTIVATE into ROLLING_BACK with the error, and none after ACTIVATE', () => {
    const error = { code: ErrorCode.Unavailable, message: 'destination unreachable' };
    const record = at(MigrationPhase.DiskBulk);
    const rolling = applyTransition(record, failureStep(record, error)!, T0).record;
    expect(rolling.phase).toBe(MigrationPhase.RollingBack);
    expect(rolling.error).toEqual(error);
    expect(rolling.history.at(-1)?.note).toBe('destination unreachable');
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

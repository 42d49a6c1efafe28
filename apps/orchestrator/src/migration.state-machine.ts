/**
 * The per-migration state machine, pure: no I/O, time passed in. The store persists what it returns; the runner
 * (next) performs each phase's side effects only after the new record is durable.
 */
import {
  FORWARD_PHASES,
  isTerminalPhase,
  MigrationPhase,
  type MigrationFigures,
  type MigrationOptionsView,
  type MigrationView,
  type WireError,
} from '@wanmig/protocol';
import { AbortRefusedError, InvalidTransitionError, StaleEpochError } from './errors.js';

/** The persisted record is exactly what the API shows. */
export type MigrationRecord = MigrationView;
export type MigrationOptions = MigrationOptionsView;

export interface NewMigration {
  id: string;
  vmId: string;
  fromSite: string;
  toSite: string;
  options: MigrationOptions;
}

/** One requested step: "from `epoch`, go to `to`". The epoch makes a replayed step recognisable. */
export interface TransitionStep {
  epoch: number;
  to: MigrationPhase;
  note?: string;
  error?: WireError;
}

export interface TransitionResult {
  record: MigrationRecord;
  /** False when the step had already been applied (same epoch, same target): nothing to write, nothing to redo. */
  changed: boolean;
}

const STOP_AND_COPY_INDEX = FORWARD_PHASES.indexOf(MigrationPhase.StopAndCopy);

export function newMigrationRecord(input: NewMigration, now: Date): MigrationRecord {
  const at = now.toISOString();
  return {
    id: input.id,
    vmId: input.vmId,
    fromSite: input.fromSite,
    toSite: input.toSite,
    options: { ...input.options },
    phase: MigrationPhase.Planned,
    epoch: 0,
    history: [{ phase: MigrationPhase.Planned, at }],
    createdAt: at,
    updatedAt: at,
  };
}

/** What the rollback rules look at: the phase, and whether the destination has run the VM. */
export type RollbackView = Pick<MigrationRecord, 'phase' | 'destination'>;

/**
 * True before the point of no return, the destination's resume (inside STOP_AND_COPY): the source is still
 * authoritative, so a rollback leaves it running untouched and loses nothing. From the resume on (REDIRECT, ACTIVATE)
 * only forward recovery: a rollback would discard what the destination did.
 */
export function isRollbackable(record: RollbackView): boolean {
  const index = FORWARD_PHASES.indexOf(record.phase);
  if (index < 0 || index > STOP_AND_COPY_INDEX) return false;
  return !(record.phase === MigrationPhase.StopAndCopy && record.destination?.resumed === true);
}

/** The destination runs (or has run) the VM: a failing step is retried, never rolled back. */
export function isPastPointOfNoReturn(record: RollbackView): boolean {
  return !isTerminalPhase(record.phase) && record.phase !== MigrationPhase.RollingBack && !isRollbackable(record);
}

/** The phase that normally follows (ROLLING_BACK is followed by ROLLED_BACK); undefined in terminal phases. */
export function nextPhase(phase: MigrationPhase): MigrationPhase | undefined {
  if (phase === MigrationPhase.RollingBack) return MigrationPhase.RolledBack;
  const index = FORWARD_PHASES.indexOf(phase);
  return index >= 0 ? FORWARD_PHASES[index + 1] : undefined;
}

export function canTransition(from: RollbackView, to: MigrationPhase): boolean {
  if (isTerminalPhase(from.phase)) return false;
  if (to === MigrationPhase.RollingBack) return isRollbackable(from);
  if (from.phase === MigrationPhase.RollingBack) return to === MigrationPhase.RolledBack;
  return nextPhase(from.phase) === to;
}

/**
 * Applies one step. Idempotent: the same (epoch → phase) applied again to the record it produced is a no-op. A step
 * from another epoch is stale (StaleEpochError, CONFLICT); a step the machine does not allow is refused
 * (InvalidTransitionError, CONFLICT).
 */
export function applyTransition(record: MigrationRecord, step: TransitionStep, now: Date): TransitionResult {
  if (record.epoch === step.epoch + 1 && record.phase === step.to) return { record, changed: false };
  if (record.epoch !== step.epoch) throw new StaleEpochError(record.id, record.phase, step.epoch, record.epoch);
  if (!canTransition(record, step.to)) {
    const why = isTerminalPhase(record.phase)
      ? 'the migration is finished'
      : step.to === MigrationPhase.RollingBack
        ? 'the destination runs the VM: only forward recovery'
        : undefined;
    throw new InvalidTransitionError(record.id, record.phase, step.to, why);
  }
  const at = now.toISOString();
  const next: MigrationRecord = {
    ...record,
    phase: step.to,
    epoch: record.epoch + 1,
    history: [
      ...record.history,
      step.note === undefined ? { phase: step.to, at } : { phase: step.to, at, note: step.note },
    ],
    updatedAt: at,
  };
  if (step.error) next.error = step.error;
  return { record: next, changed: true };
}

/** The step to advance along the forward path. */
export function advanceStep(record: MigrationRecord, note?: string): TransitionStep {
  const to = nextPhase(record.phase);
  if (to === undefined) throw new InvalidTransitionError(record.id, record.phase, record.phase, 'no next phase');
  return { epoch: record.epoch, to, note };
}

/**
 * The step an operator's abort asks for. Already rolling back: null (the abort is already under way, nothing to do).
 * Past the point of no return (the destination runs the VM), or finished: refused with AbortRefusedError (CONFLICT),
 * nothing changes.
 */
export function abortStep(record: MigrationRecord, reason = 'aborted by request'): TransitionStep | null {
  if (record.phase === MigrationPhase.RollingBack) return null;
  if (isTerminalPhase(record.phase)) throw new AbortRefusedError(record.id, record.phase, 'the migration is finished');
  if (!isRollbackable(record))
    throw new AbortRefusedError(
      record.id,
      record.phase,
      'the destination runs the VM (past the point of no return); only forward recovery remains',
    );
  return { epoch: record.epoch, to: MigrationPhase.RollingBack, note: reason };
}

/**
 * The step a failure leads to: before the point of no return, ROLLING_BACK with the error recorded. Past it there is
 * no step (null): the runner retries the current phase forward, and the caller may record the error with
 * {@link withError}.
 */
export function failureStep(record: MigrationRecord, error: WireError): TransitionStep | null {
  if (!isRollbackable(record)) return null;
  return { epoch: record.epoch, to: MigrationPhase.RollingBack, note: error.message, error };
}

/** The destination runs the VM: recorded as soon as it is known (not a transition: the epoch stays). */
export function withResumed(record: MigrationRecord, now: Date): MigrationRecord {
  return { ...record, destination: { ...record.destination, resumed: true }, updatedAt: now.toISOString() };
}

/** Records an error without a phase change (forward recovery). Not a transition: the epoch stays. */
export function withError(record: MigrationRecord, error: WireError, now: Date): MigrationRecord {
  return { ...record, error, updatedAt: now.toISOString() };
}

/** Merges measured figures into the record (not a transition: the epoch stays). */
export function withFigures(record: MigrationRecord, figures: MigrationFigures, now: Date): MigrationRecord {
  return { ...record, figures: { ...record.figures, ...figures }, updatedAt: now.toISOString() };
}

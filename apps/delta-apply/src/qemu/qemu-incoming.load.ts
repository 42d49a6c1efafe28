import { QEMU_EXITED, type QemuExit, type QemuIncomingVm, type QmpClient } from '@wanmig/hypervisor';
import { ErrorCode, type WireError } from '@wanmig/protocol';
import { QemuDestinationConflictError, QemuDestinationStateError } from './qemu-destination.errors.js';

/** Run states of a destination that has loaded the stream (in post-copy: its device state), waiting for `cont`. */
const LOADED_STATES = new Set(['paused', 'prelaunch']);
/** The destination's `query-migrate` status while it may run with RAM still arriving (or asked for). */
const POSTCOPY_ACTIVE = 'postcopy-active';
/** How often a resume looks whether the destination has finished loading. */
const LOAD_POLL_MS = 10;
/** The run state status() reports for a destination that was aborted (its QEMU is gone). */
export const ABORTED = 'aborted';

/** What the load is read from: the destination QEMU's run state and its incoming migration's status. */
export type LoadingQemu = Pick<QemuIncomingVm, 'status' | 'exit' | 'stderrTail'> & {
  readonly qmp: Pick<QmpClient, 'execute'>;
};

/**
 * Whether a destination waits for `cont` with what it needs to run: paused after `-incoming -S`, its incoming
 * migration not failed. In post-copy QEMU pauses once it holds the device state, its migration `postcopy-active`
 * with RAM still to come: that counts only for a destination started with `postcopy` (any other never gets there).
 */
export function isLoaded(runState: string, migrationStatus: string | undefined, postcopy: boolean): boolean {
  if (!LOADED_STATES.has(runState) || migrationStatus === 'failed') return false;
  return migrationStatus !== POSTCOPY_ACTIVE || postcopy;
}

/** The destination's `query-migrate` status while its QEMU lives (undefined when it cannot say). */
export async function incomingMigrationStatus(vm: LoadingQemu, runState: string): Promise<string | undefined> {
  if (runState === QEMU_EXITED || runState === ABORTED) return undefined;
  const info = await vm.qmp.execute<{ status?: string }>('query-migrate').catch(() => undefined);
  return info?.status;
}

export interface WaitForLoadOptions {
  migrationId: string;
  postcopy: boolean;
  timeoutMs: number;
  /** An abort waits: give up at once. */
  aborting: () => boolean;
  /** Why the feed failed, if it did (named in a timeout's message). */
  feedError: () => WireError | undefined;
}

/**
 * Until the destination is loaded (isLoaded); gives up (QemuDestinationConflictError, QemuDestinationStateError) on
 * an abort, an exit, a state it does not load from, or the time.
 */
export async function waitForLoad(vm: LoadingQemu, o: WaitForLoadOptions): Promise<void> {
  const { migrationId } = o;
  const deadline = performance.now() + o.timeoutMs;
  for (;;) {
    const state = await vm.status();
    const migrationStatus = await incomingMigrationStatus(vm, state.status);
    if (isLoaded(state.status, migrationStatus, o.postcopy)) return;
    if (o.aborting()) throw new QemuDestinationConflictError(migrationId, 'aborted while waiting for the load');
    if (state.status === QEMU_EXITED) {
      const tail = vm.stderrTail(5).trim();
      throw new QemuDestinationStateError(
        ErrorCode.Unavailable,
        `the destination QEMU of ${migrationId} ${describeExit(vm.exit)}${tail ? `: ${tail}` : ''}`,
        { migrationId, state: state.status },
      );
    }
    if (state.status !== 'inmigrate') {
      const incoming = migrationStatus === undefined ? '' : ` (incoming migration ${migrationStatus})`;
      throw new QemuDestinationStateError(
        ErrorCode.Conflict,
        `destination QEMU of ${migrationId} is ${state.status}${incoming}`,
        { migrationId, state: state.status },
      );
    }
    if (performance.now() >= deadline) {
      const feedError = o.feedError();
      const fed = feedError ? ` (its feed failed: ${feedError.message})` : '';
      throw new QemuDestinationStateError(
        ErrorCode.StreamTimeout,
        `destination QEMU of ${migrationId} still ${state.status} after ${o.timeoutMs} ms${fed}`,
        { migrationId, state: state.status },
      );
    }
    await new Promise((wake) => setTimeout(wake, LOAD_POLL_MS));
  }
}

export function describeExit(exit: QemuExit | undefined): string {
  if (!exit) return 'is gone';
  return exit.signal ? `was killed by ${exit.signal}` : `exited ${exit.code}`;
}

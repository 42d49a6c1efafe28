import { ErrorCode, WanmigError, type MemoryStatusReply, type ResumeVmReply } from '@wanmig/protocol';

/** How long a resume with no answer is followed up before its outcome is called unknown. */
export const RESUME_SETTLE_MS = 60_000;
const ASK_EVERY_MS = 1000;

/** The destination may or may not run the VM, and cannot be asked: the source must stay paused. */
export class ResumeOutcomeUnknownError extends WanmigError {
  constructor(migrationId: string, waitedMs: number, cause?: unknown) {
    super(
      ErrorCode.Unavailable,
      `migration ${migrationId}: the destination did not answer the resume, nor ${Math.round(waitedMs / 1000)} s of ` +
        `status requests; it may run the VM, so the source stays paused until the destination confirms it does not`,
      { cause },
    );
    this.name = 'ResumeOutcomeUnknownError';
  }
}

export interface SettleOptions {
  migrationId: string;
  /** The error the resume request failed with. */
  error: unknown;
  /** The destination's memory status (delta-apply `mem.status`). */
  status: () => Promise<MemoryStatusReply>;
  verifyRam: boolean;
  settleMs?: number;
  askEveryMs?: number;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

/**
 * A resume that failed without an answer (timeout, link down) may have run the VM at the destination all the same.
 * Resuming the source then would leave two copies running, each writing its own disk. So the destination is asked:
 * it runs the VM → the migration went through (returns what the reply would have said); it does not → the failure
 * stands (rethrown: roll back); no answer for `settleMs` → ResumeOutcomeUnknownError, and the caller keeps the
 * source paused. A resume the destination refused (any coded answer) stands as it is.
 */
export async function settleResume(o: SettleOptions): Promise<ResumeVmReply> {
  if (!(o.error instanceof WanmigError && o.error.code === ErrorCode.Unavailable)) throw o.error;
  const now = o.now ?? (() => performance.now());
  const sleep = o.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  const settleMs = o.settleMs ?? RESUME_SETTLE_MS;
  const started = now();
  for (;;) {
    let status: MemoryStatusReply | undefined;
    try {
      status = await o.status();
    } catch {
      // Still no answer: ask again until the time is up.
    }
    if (status?.running && status.serviceAddress && status.resumedAt !== undefined) {
      return {
        vmId: status.vmId ?? '',
        serviceAddress: status.serviceAddress,
        resumedAt: status.resumedAt,
        // The destination never runs a VM whose RAM failed the check it was asked for.
        ...(o.verifyRam ? { ramVerified: true } : {}),
      };
    }
    if (status) throw o.error;
    if (now() - started >= settleMs) throw new ResumeOutcomeUnknownError(o.migrationId, now() - started, o.error);
    await sleep(o.askEveryMs ?? ASK_EVERY_MS);
  }
}

import { ErrorCode } from '@wanmig/protocol';
import { HypervisorError } from '../errors.js';
import { type QmpClient } from './qmp.client.js';
import { QmpCommandError } from './qmp.errors.js';
import { QMP_ANY_EVENT, type QmpEvent } from './qmp.types.js';

/** Bound on the job reaching `ready` (with sync=none QEMU 7.2 reports it at once). */
export const DEFAULT_DISK_MIRROR_READY_TIMEOUT_MS = 30_000;
/** Bound on each step of cancel(): the soft cancel, then (if it hangs) the forced one. */
export const DEFAULT_DISK_MIRROR_CANCEL_TIMEOUT_MS = 15_000;
/** QEMU accepts a mirror granularity that is a power of two in this range. */
export const MIN_MIRROR_GRANULARITY = 512;
export const MAX_MIRROR_GRANULARITY = 64 * 2 ** 20;

/** Where disk-transfer's `mirror-target` export listens: TCP (`nbd://host:port`) or a unix socket. */
export type NbdTargetAddress = { host: string; port: number } | { path: string };

export interface DiskMirrorOptions {
  /** Block node of the guest's disk (`-blockdev ...,node-name=disk0`). */
  device: string;
  nbd: NbdTargetAddress;
  /** The export's name on that NBD server. */
  exportName: string;
  /** Default `wanmig-mirror-<device>`. */
  jobId?: string;
  /** Node name of the NBD node added for the target; default `<jobId>-nbd`. */
  targetNode?: string;
  /** Mirror granularity in bytes (QEMU's default: the cluster size, 64 KiB for a raw file). */
  granularity?: number;
  readyTimeoutMs?: number;
}

/** Why a mirror stopped being trustworthy, or could not be set up or taken down. */
export const DiskMirrorFailure = {
  /** A bad option, refused before anything was sent to QEMU. */
  InvalidOptions: 'invalid-options',
  /** QEMU reported an I/O error on the job (BLOCK_JOB_ERROR): a guest write may not have reached the target. */
  JobError: 'job-error',
  /** The job ended without being asked to (BLOCK_JOB_COMPLETED/CANCELLED, with QEMU's error when it gave one). */
  JobEnded: 'job-ended',
  /** The job did not become ready, or did not end after a cancel, in time. */
  Timeout: 'timeout',
  /** The QMP connection closed while the mirror was needed: nothing tells whether the job still runs. */
  QmpClosed: 'qmp-closed',
} as const;
export type DiskMirrorFailure = (typeof DiskMirrorFailure)[keyof typeof DiskMirrorFailure];

/**
 * A QEMU disk mirror to disk-transfer failed. Once a running mirror fails, guest writes stop reaching the target
 * (QEMU keeps writing the source and the guest sees no error), so disk-transfer's dirty map is incomplete: the disk
 * migration must be aborted, never finalized.
 */
export class DiskMirrorError extends HypervisorError {
  readonly failure: DiskMirrorFailure;
  readonly jobId: string;
  readonly device: string;
  /** QEMU's own words (`error` of BLOCK_JOB_COMPLETED, `operation` of BLOCK_JOB_ERROR), when it gave any. */
  readonly qemuError?: string;
  constructor(
    failure: DiskMirrorFailure,
    message: string,
    fields: { jobId: string; device: string; qemuError?: string; cause?: unknown },
  ) {
    const code = failure === DiskMirrorFailure.InvalidOptions ? ErrorCode.InvalidRequest : ErrorCode.Unavailable;
    super(code, `disk mirror ${fields.jobId} of ${fields.device}: ${message}`, { cause: fields.cause });
    this.name = 'DiskMirrorError';
    this.failure = failure;
    this.jobId = fields.jobId;
    this.device = fields.device;
    this.qemuError = fields.qemuError;
  }
}

/** A running `blockdev-mirror` (sync=none, write-blocking) of a guest disk into an NBD export. */
export interface DiskMirror {
  readonly jobId: string;
  readonly device: string;
  readonly targetNode: string;
  /** Undefined while every guest write is mirrored; the failure once the job stopped doing so on its own. */
  readonly error: DiskMirrorError | undefined;
  /** Resolves (never rejects) with the failure, the moment there is one; stays pending otherwise. */
  readonly failed: Promise<DiskMirrorError>;
  /**
   * Stops mirroring and removes the NBD node (QEMU then disconnects from the export). A soft `block-job-cancel`
   * (for a ready mirror, a completion without pivot: the guest stays on its source), forced if it hangs. Idempotent;
   * fine after a failure. Rejects with QmpCommandError (QEMU refused) or DiskMirrorError (Timeout, QmpClosed).
   */
  cancel(options?: { timeoutMs?: number }): Promise<void>;
}

const JOB_EVENTS = new Set(['BLOCK_JOB_READY', 'BLOCK_JOB_ERROR', 'BLOCK_JOB_COMPLETED', 'BLOCK_JOB_CANCELLED']);

/** Fields of the BLOCK_JOB_* events this file reads (`device` is the job id). */
interface JobEventData {
  device?: string;
  error?: string;
  operation?: string;
  action?: string;
}

/**
 * Mirrors a running guest's disk into disk-transfer's `mirror-target` export, the way libvirt migrates storage:
 * `blockdev-add` an `nbd` node for the export, then `blockdev-mirror` with `sync: none` (disk-transfer reads the
 * bulk from the source image itself) and `copy-mode: write-blocking` (a guest write completes only once it has
 * reached the export too, so the export's dirty map is never behind the image). Resolves once the job is ready.
 * Errors: QmpCommandError as QEMU gave it (unknown node, unreachable NBD server, export size differs...),
 * DiskMirrorError otherwise. On failure nothing is left behind (the job is cancelled, the node deleted).
 */
export async function startDiskMirror(qmp: QmpClient, options: DiskMirrorOptions): Promise<DiskMirror> {
  const jobId = options.jobId ?? `wanmig-mirror-${options.device}`;
  const targetNode = options.targetNode ?? `${jobId}-nbd`;
  const { granularity } = options;
  if (
    granularity !== undefined &&
    (!Number.isInteger(granularity) ||
      granularity < MIN_MIRROR_GRANULARITY ||
      granularity > MAX_MIRROR_GRANULARITY ||
      (granularity & (granularity - 1)) !== 0)
  ) {
    throw new DiskMirrorError(
      DiskMirrorFailure.InvalidOptions,
      `granularity ${granularity} is not a power of two in [${MIN_MIRROR_GRANULARITY}, ${MAX_MIRROR_GRANULARITY}]`,
      { jobId, device: options.device },
    );
  }
  const server =
    'path' in options.nbd
      ? { type: 'unix', path: options.nbd.path }
      : { type: 'inet', host: options.nbd.host, port: String(options.nbd.port) };
  await qmp.execute('blockdev-add', {
    driver: 'nbd',
    'node-name': targetNode,
    server,
    export: options.exportName,
  });
  const mirror = new QemuDiskMirror(qmp, jobId, options.device, targetNode);
  try {
    await qmp.execute('blockdev-mirror', {
      'job-id': jobId,
      device: options.device,
      target: targetNode,
      sync: 'none',
      'copy-mode': 'write-blocking',
      // A failed write to the export ends the job, loudly; `ignore` would lose a dirty mark silently.
      'on-source-error': 'report',
      'on-target-error': 'report',
      ...(granularity !== undefined ? { granularity } : {}),
    });
    await mirror.ready(options.readyTimeoutMs ?? DEFAULT_DISK_MIRROR_READY_TIMEOUT_MS);
    return mirror;
  } catch (err) {
    await mirror.cancel({ timeoutMs: DEFAULT_DISK_MIRROR_CANCEL_TIMEOUT_MS }).catch(() => undefined);
    throw err;
  }
}

class QemuDiskMirror implements DiskMirror {
  error: DiskMirrorError | undefined;
  readonly failed: Promise<DiskMirrorError>;
  private isReady = false;
  private cancelAsked = false;
  private cancelling?: Promise<void>;
  private end?: QmpEvent<JobEventData>;
  private readonly changed = new Set<() => void>();
  private readonly stopListening: () => void;
  private onFailed!: (err: DiskMirrorError) => void;

  constructor(
    private readonly qmp: QmpClient,
    readonly jobId: string,
    readonly device: string,
    readonly targetNode: string,
  ) {
    this.failed = new Promise((resolve) => (this.onFailed = resolve));
    // Listening from before blockdev-mirror is sent: its events may come before its reply.
    this.stopListening = qmp.on(QMP_ANY_EVENT, (event) => this.onEvent(event));
    void qmp.closed.then(() => {
      if (!this.end && !this.cancelAsked) this.fail(DiskMirrorFailure.QmpClosed, 'the QMP connection closed');
      this.notify();
    });
  }

  /** Resolves at BLOCK_JOB_READY; rejects with the failure, or Timeout. */
  async ready(timeoutMs: number): Promise<void> {
    await this.until(() => this.isReady || this.error !== undefined, timeoutMs, 'became ready');
    if (this.error) throw this.error;
  }

  cancel(options: { timeoutMs?: number } = {}): Promise<void> {
    this.cancelling ??= this.cancelOnce(options.timeoutMs ?? DEFAULT_DISK_MIRROR_CANCEL_TIMEOUT_MS);
    return this.cancelling;
  }

  private async cancelOnce(timeoutMs: number): Promise<void> {
    this.cancelAsked = true;
    try {
      if (!this.end && !(await this.cancelJob(false, timeoutMs))) await this.cancelJob(true, timeoutMs);
      await this.qmp.execute('blockdev-del', { 'node-name': this.targetNode }).catch((err: unknown) => {
        // Already gone (never added, or deleted by someone else): nothing to undo.
        if (!(err instanceof QmpCommandError && /find node/i.test(err.desc))) throw err;
      });
    } finally {
      this.stopListening();
    }
  }

  /** Asks QEMU to cancel the job; true once it has ended, false if it did not within timeoutMs. */
  private async cancelJob(force: boolean, timeoutMs: number): Promise<boolean> {
    try {
      await this.qmp.execute('block-job-cancel', { device: this.jobId, force });
    } catch (err) {
      // DeviceNotActive: no such job (it never started, or ended and was dismissed).
      if (err instanceof QmpCommandError && err.errorClass === 'DeviceNotActive') return true;
      throw err;
    }
    try {
      await this.until(() => this.end !== undefined || !this.qmp.isOpen, timeoutMs, 'ended after a cancel');
    } catch (err) {
      if (force) throw err;
      return false;
    }
    if (!this.end) throw this.error ?? this.failure(DiskMirrorFailure.QmpClosed, 'the QMP connection closed');
    return true;
  }

  private onEvent(event: QmpEvent<JobEventData>): void {
    if (!JOB_EVENTS.has(event.event) || event.data?.device !== this.jobId) return;
    const data = event.data;
    if (event.event === 'BLOCK_JOB_READY') {
      this.isReady = true;
    } else if (event.event === 'BLOCK_JOB_ERROR') {
      const what = `${data.operation ?? 'I/O'} error (action ${data.action ?? '?'})`;
      this.fail(DiskMirrorFailure.JobError, `QEMU reported a ${what}`, data.operation);
    } else {
      this.end = event;
      if (data.error !== undefined) this.fail(DiskMirrorFailure.JobEnded, `ended with: ${data.error}`, data.error);
      else if (!this.cancelAsked) this.fail(DiskMirrorFailure.JobEnded, `ended (${event.event}) without a cancel`);
    }
    this.notify();
  }

  private fail(failure: DiskMirrorFailure, message: string, qemuError?: string): void {
    if (this.error) return;
    this.error = this.failure(failure, message, qemuError);
    this.onFailed(this.error);
  }

  private failure(failure: DiskMirrorFailure, message: string, qemuError?: string): DiskMirrorError {
    return new DiskMirrorError(failure, message, { jobId: this.jobId, device: this.device, qemuError });
  }

  private notify(): void {
    for (const wake of [...this.changed]) wake();
  }

  /** Waits until `done()` holds, re-checked at each job event; Timeout after timeoutMs. */
  private until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const finish = () => {
        clearTimeout(timer);
        this.changed.delete(check);
      };
      const check = () => {
        if (!done()) return;
        finish();
        resolve();
      };
      const timer = setTimeout(() => {
        finish();
        reject(this.failure(DiskMirrorFailure.Timeout, `the job never ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.changed.add(check);
    });
  }
}

/**
 * The mirror of `device` another connection started (`startDiskMirror`'s default job id), seen through `qmp`: it can
 * be cancelled from here. Undefined when QEMU runs no such job (it ended: with `on-target-error: report`, a mirror
 * that failed to write its target is gone, so a job found `ready` has mirrored every write so far).
 */
export async function findDiskMirror(
  qmp: QmpClient,
  device: string,
): Promise<{ mirror: DiskMirror; ready: boolean; status: string } | undefined> {
  const jobId = `wanmig-mirror-${device}`;
  const jobs = await qmp.execute<Array<{ device: string; ready?: boolean; status?: string }>>('query-block-jobs');
  const job = jobs.find((j) => j.device === jobId);
  if (!job) return undefined;
  const mirror = new QemuDiskMirror(qmp, jobId, device, `${jobId}-nbd`);
  return { mirror, ready: job.ready === true, status: job.status ?? 'unknown' };
}

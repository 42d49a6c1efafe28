import { ErrorCode, WanmigError } from '@wanmig/protocol';

/** Base of every hypervisor driver error. */
export class HypervisorError extends WanmigError {
  readonly vmId?: string;
  constructor(code: ErrorCode, message: string, fields: { vmId?: string; cause?: unknown } = {}) {
    super(code, message, { cause: fields.cause });
    this.name = 'HypervisorError';
    this.vmId = fields.vmId;
  }
}

/** No guest with this id runs under the runtime directory (never started, released, or cleaned up). */
export class GuestNotFoundError extends HypervisorError {
  readonly runtimeDir: string;
  constructor(vmId: string, runtimeDir: string, options: { cause?: unknown } = {}) {
    super(ErrorCode.NotFound, `no sim guest '${vmId}' under ${runtimeDir}`, { vmId, cause: options.cause });
    this.name = 'GuestNotFoundError';
    this.runtimeDir = runtimeDir;
  }
}

/** A guest with this id already runs under the runtime directory. */
export class GuestExistsError extends HypervisorError {
  readonly pid: number;
  constructor(vmId: string, pid: number) {
    super(ErrorCode.Conflict, `sim guest '${vmId}' already runs (pid ${pid})`, { vmId });
    this.name = 'GuestExistsError';
    this.pid = pid;
  }
}

/** The guest process exited (or was killed) while it was needed; `stderrTail` holds its last log lines. */
export class GuestDiedError extends HypervisorError {
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stderrTail: string;
  constructor(
    vmId: string,
    fields: { exitCode?: number | null; signal?: string | null; stderrTail?: string; cause?: unknown } = {},
  ) {
    const how = fields.signal
      ? `killed by ${fields.signal}`
      : fields.exitCode != null
        ? `exited ${fields.exitCode}`
        : 'is gone';
    const tail = fields.stderrTail?.trim() ? `; last log lines:\n${fields.stderrTail.trim()}` : '';
    super(ErrorCode.Unavailable, `sim guest '${vmId}' ${how}${tail}`, { vmId, cause: fields.cause });
    this.name = 'GuestDiedError';
    this.exitCode = fields.exitCode ?? null;
    this.signal = fields.signal ?? null;
    this.stderrTail = fields.stderrTail ?? '';
  }
}

/** The guest process could not be started or did not report ready in time. */
export class GuestStartError extends HypervisorError {
  readonly stderrTail: string;
  constructor(vmId: string, reason: string, fields: { stderrTail?: string; cause?: unknown } = {}) {
    const tail = fields.stderrTail?.trim() ? `; last log lines:\n${fields.stderrTail.trim()}` : '';
    super(ErrorCode.Unavailable, `sim guest '${vmId}' did not start: ${reason}${tail}`, {
      vmId,
      cause: fields.cause,
    });
    this.name = 'GuestStartError';
    this.stderrTail = fields.stderrTail ?? '';
  }
}

/** A guest option is invalid (RAM size, vm id, workload, disk URI...). */
export class GuestConfigError extends HypervisorError {
  readonly problems: string[];
  constructor(problems: string[], fields: { vmId?: string } = {}) {
    super(ErrorCode.InvalidRequest, `invalid sim guest options: ${problems.join('; ')}`, fields);
    this.name = 'GuestConfigError';
    this.problems = problems;
  }
}

/** The operation is not allowed in the guest's current run state (e.g. deviceState while running). */
export class GuestStateError extends HypervisorError {
  readonly op: string;
  readonly state: string;
  constructor(vmId: string, op: string, state: string, hint = '') {
    super(ErrorCode.Conflict, `sim guest '${vmId}' cannot ${op} while ${state}${hint ? `: ${hint}` : ''}`, { vmId });
    this.name = 'GuestStateError';
    this.op = op;
    this.state = state;
  }
}

export const DeviceStateProblem = {
  Size: 'size',
  Checksum: 'checksum',
  Format: 'format',
  /** The state is well formed but does not belong to this guest (RAM size, RAM contents' header). */
  Mismatch: 'mismatch',
} as const;
export type DeviceStateProblem = (typeof DeviceStateProblem)[keyof typeof DeviceStateProblem];

/** A device state blob refused at resume: the incoming guest stays incoming. */
export class DeviceStateError extends HypervisorError {
  readonly problem: DeviceStateProblem;
  constructor(problem: DeviceStateProblem, message: string, fields: { vmId?: string; cause?: unknown } = {}) {
    super(ErrorCode.InvalidRequest, `device state refused (${problem}): ${message}`, fields);
    this.name = 'DeviceStateError';
    this.problem = problem;
  }
}

/** The guest did not answer a control request in time. */
export class ControlTimeoutError extends HypervisorError {
  readonly op: string;
  readonly timeoutMs: number;
  constructor(vmId: string, op: string, timeoutMs: number) {
    super(ErrorCode.Unavailable, `sim guest '${vmId}' did not answer '${op}' within ${timeoutMs} ms`, { vmId });
    this.name = 'ControlTimeoutError';
    this.op = op;
    this.timeoutMs = timeoutMs;
  }
}

/** The control connection closed with requests in flight (the guest exited, or dropped the connection). */
export class ControlConnectionLostError extends HypervisorError {
  constructor(vmId: string) {
    super(ErrorCode.Unavailable, `control connection to sim guest '${vmId}' was lost`, { vmId });
    this.name = 'ControlConnectionLostError';
  }
}

/** A malformed control message (either direction). */
export class ControlProtocolError extends HypervisorError {
  constructor(message: string, fields: { vmId?: string; cause?: unknown } = {}) {
    super(ErrorCode.InvalidRequest, `control protocol: ${message}`, fields);
    this.name = 'ControlProtocolError';
  }
}

/** A guest RAM read outside the RAM or not page aligned. */
export class MemoryRangeError extends HypervisorError {
  readonly offset: number;
  readonly length: number;
  constructor(vmId: string, offset: number, length: number, reason: string) {
    super(ErrorCode.InvalidRequest, `RAM read [${offset}, +${length}) of '${vmId}' refused: ${reason}`, { vmId });
    this.name = 'MemoryRangeError';
    this.offset = offset;
    this.length = length;
  }
}

/** An error the guest reported over the control channel that has no more specific class here. */
export class GuestRequestError extends HypervisorError {
  readonly op: string;
  constructor(vmId: string, op: string, code: ErrorCode, message: string) {
    super(code, message, { vmId });
    this.name = 'GuestRequestError';
    this.op = op;
  }
}

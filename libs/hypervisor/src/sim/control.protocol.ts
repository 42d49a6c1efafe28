import { ErrorCode, WanmigError, isErrorCode } from '@wanmig/protocol';
import {
  ControlProtocolError,
  DeviceStateError,
  DeviceStateProblem,
  GuestRequestError,
  GuestStateError,
} from '../errors.js';
import { MAX_THROTTLE_PERCENT } from './sim.constants.js';

/**
 * The guest's control channel: a unix socket `<runtimeDir>/<vmId>.ctl`, JSON lines. A request is
 * `{"id": <n>, "op": "<op>", "args": {...}}`, its reply `{"id": <n>, "ok": true, "result": {...}}` or
 * `{"id": <n>, "ok": false, "error": {"code", "name", "message", ...}}`. Requests on one connection are
 * answered in order; any number of connections may be open (the driver of any process).
 */
export const ControlOp = {
  /** → SimVmDescription */
  Describe: 'describe',
  /** → GuestStats */
  Stats: 'stats',
  /** → { map: base64 serialized BlockMap of 4 KiB pages, pages }; the first call starts logging. */
  DrainDirty: 'drainDirty',
  StopDirtyLog: 'stopDirtyLog',
  /** Stops the main loop, holds the service; replies once no RAM or disk write is in flight. */
  Pause: 'pause',
  Resume: 'resume',
  /** { percent: 0..99 } */
  Throttle: 'throttle',
  /** Only while paused → { blob: base64, sha256 } */
  DeviceState: 'deviceState',
  /** Incoming guest only: { blob: base64, sha256 } → runs from its RAM file. */
  ResumeIncoming: 'resumeIncoming',
  /** { command: a service request line } → { reply }: answered at once, even while paused (a monitor). */
  Monitor: 'monitor',
  /** The guest exits after replying. */
  Release: 'release',
} as const;
export type ControlOp = (typeof ControlOp)[keyof typeof ControlOp];
const OPS = new Set<string>(Object.values(ControlOp));

export interface ControlRequest {
  id: number;
  op: ControlOp;
  args: Record<string, unknown>;
}

export interface ControlErrorBody {
  code: ErrorCode;
  name: string;
  message: string;
  /** DeviceStateError.problem */
  problem?: string;
  /** GuestStateError fields */
  op?: string;
  state?: string;
}

export type ControlResponse =
  { id: number; ok: true; result: unknown } | { id: number; ok: false; error: ControlErrorBody };

/** Longest control line either side reads (a dirty map of a 4 GiB guest stays far below). */
export const MAX_CONTROL_LINE = 64 * 2 ** 20;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseJson(line: string): unknown {
  try {
    return JSON.parse(line) as unknown;
  } catch {
    throw new ControlProtocolError('not a JSON line');
  }
}

/** Parses and checks a request line, op arguments included; throws ControlProtocolError. */
export function parseControlRequest(line: string): ControlRequest {
  const msg = parseJson(line);
  if (!isObject(msg)) throw new ControlProtocolError('a request is a JSON object');
  const { id, op } = msg;
  const args = msg.args ?? {};
  if (!Number.isSafeInteger(id)) throw new ControlProtocolError('id must be an integer');
  if (typeof op !== 'string' || !OPS.has(op)) throw new ControlProtocolError(`unknown op ${JSON.stringify(op)}`);
  if (!isObject(args)) throw new ControlProtocolError('args must be an object');
  checkArgs(op as ControlOp, args);
  return { id: id as number, op: op as ControlOp, args };
}

function checkArgs(op: ControlOp, args: Record<string, unknown>): void {
  const problem = (message: string) => new ControlProtocolError(`${op}: ${message}`);
  switch (op) {
    case ControlOp.Throttle: {
      const p = args.percent;
      if (typeof p !== 'number' || !Number.isInteger(p) || p < 0 || p > MAX_THROTTLE_PERCENT) {
        throw problem(`percent must be an integer in [0, ${MAX_THROTTLE_PERCENT}]`);
      }
      break;
    }
    case ControlOp.ResumeIncoming:
      if (typeof args.blob !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(args.blob)) {
        throw problem('blob must be base64');
      }
      if (typeof args.sha256 !== 'string' || !/^[0-9a-fA-F]{64}$/.test(args.sha256)) {
        throw problem('sha256 must be 64 hex digits');
      }
      break;
    case ControlOp.Monitor:
      if (typeof args.command !== 'string' || args.command.length > 1024) throw problem('command must be a string');
      break;
    default:
      break;
  }
}

export function parseControlResponse(line: string): ControlResponse {
  const msg = parseJson(line);
  if (!isObject(msg) || !Number.isSafeInteger(msg.id) || typeof msg.ok !== 'boolean') {
    throw new ControlProtocolError('malformed response');
  }
  if (msg.ok) return { id: msg.id as number, ok: true, result: msg.result };
  const error = msg.error;
  if (!isObject(error) || typeof error.message !== 'string') throw new ControlProtocolError('malformed error response');
  return {
    id: msg.id as number,
    ok: false,
    error: {
      code: isErrorCode(error.code) ? error.code : ErrorCode.Internal,
      name: typeof error.name === 'string' ? error.name : 'Error',
      message: error.message,
      problem: typeof error.problem === 'string' ? error.problem : undefined,
      op: typeof error.op === 'string' ? error.op : undefined,
      state: typeof error.state === 'string' ? error.state : undefined,
    },
  };
}

/** An error as it crosses the control channel: typed errors keep code, name and fields; the rest is INTERNAL. */
export function encodeControlError(err: unknown): ControlErrorBody {
  if (err instanceof DeviceStateError) return { ...base(err), problem: err.problem };
  if (err instanceof GuestStateError) return { ...base(err), op: err.op, state: err.state };
  if (err instanceof WanmigError) return base(err);
  return { code: ErrorCode.Internal, name: 'Error', message: 'internal error (see the guest log)' };
}

function base(err: WanmigError): ControlErrorBody {
  return { code: err.code, name: err.name, message: err.message };
}

/** The typed error a control error body stands for, on the driver's side. */
export function decodeControlError(vmId: string, op: string, body: ControlErrorBody): Error {
  if (body.name === 'DeviceStateError' && isProblem(body.problem)) {
    return new DeviceStateError(body.problem, body.message.replace(/^device state refused \([a-z]+\): /, ''), {
      vmId,
    });
  }
  if (body.name === 'GuestStateError' && body.op && body.state) {
    const err = new GuestStateError(vmId, body.op, body.state);
    err.message = body.message;
    return err;
  }
  return new GuestRequestError(vmId, op, body.code, body.message);
}

function isProblem(value: unknown): value is DeviceStateProblem {
  return (Object.values(DeviceStateProblem) as unknown[]).includes(value);
}

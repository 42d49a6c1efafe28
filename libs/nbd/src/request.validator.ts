import { CommandFlag, NbdCommand, NbdErrno, commandName } from './nbd.constants.js';
import { type NbdRequestHeader } from './request.codec.js';

/** What a request is checked against: the export and what the handshake agreed. */
export interface TransmissionContext {
  size: number;
  readOnly: boolean;
  structuredReplies: boolean;
  baseAllocation: boolean;
  minBlock: number;
  maxPayload: number;
}

export interface Rejection {
  errno: NbdErrno;
  message: string;
}

/** Command flags each command accepts (FUA is accepted everywhere, as proto.md asks). */
const ALLOWED_FLAGS: Readonly<Record<number, number>> = {
  [NbdCommand.Read]: CommandFlag.Fua | CommandFlag.Df,
  [NbdCommand.Write]: CommandFlag.Fua,
  [NbdCommand.Disc]: 0xffff,
  [NbdCommand.Flush]: CommandFlag.Fua,
  [NbdCommand.Trim]: CommandFlag.Fua,
  [NbdCommand.Cache]: CommandFlag.Fua,
  [NbdCommand.WriteZeroes]: CommandFlag.Fua | CommandFlag.NoHole | CommandFlag.FastZero,
  [NbdCommand.BlockStatus]: CommandFlag.Fua | CommandFlag.ReqOne,
};

const MUTATING = new Set<number>([NbdCommand.Write, NbdCommand.Trim, NbdCommand.WriteZeroes]);

/** True for commands that change the export (WRITE, TRIM, WRITE_ZEROES). */
export function isMutating(type: number): boolean {
  return MUTATING.has(type);
}

/**
 * Check a request as proto.md's "Error values" section says: unknown command or flag → EINVAL;
 * a change to a read-only export → EPERM; a READ payload beyond the maximum → EINVAL (EOVERFLOW
 * with structured replies); a range past the end → ENOSPC for WRITE / WRITE_ZEROES, EINVAL
 * otherwise; misalignment to the minimum block → EINVAL; BLOCK_STATUS without a negotiated
 * context → EINVAL. Returns undefined when the request may run.
 */
export function validateRequest(req: NbdRequestHeader, ctx: TransmissionContext): Rejection | undefined {
  const name = commandName(req.type);
  const allowed = ALLOWED_FLAGS[req.type];
  if (allowed === undefined) return { errno: NbdErrno.EINVAL, message: `unknown command ${req.type}` };
  if ((req.flags & ~allowed) !== 0) {
    return { errno: NbdErrno.EINVAL, message: `flags 0x${req.flags.toString(16)} not valid for ${name}` };
  }
  if ((req.flags & CommandFlag.Df) !== 0 && !ctx.structuredReplies) {
    return { errno: NbdErrno.EINVAL, message: 'DF without structured replies' };
  }
  if (isMutating(req.type) && ctx.readOnly) return { errno: NbdErrno.EPERM, message: 'export is read-only' };
  switch (req.type) {
    case NbdCommand.Flush:
      if (req.offset !== 0 || req.length !== 0) {
        return { errno: NbdErrno.EINVAL, message: 'FLUSH offset and length must be zero' };
      }
      return undefined;
    case NbdCommand.Read:
    case NbdCommand.Write:
      if (req.length > ctx.maxPayload) {
        return {
          errno: req.type === NbdCommand.Read && ctx.structuredReplies ? NbdErrno.EOVERFLOW : NbdErrno.EINVAL,
          message: `${name} of ${req.length} bytes exceeds the maximum payload ${ctx.maxPayload}`,
        };
      }
      break;
    case NbdCommand.BlockStatus:
      if (!ctx.baseAllocation) return { errno: NbdErrno.EINVAL, message: 'no metadata context was negotiated' };
      break;
  }
  if (req.offset + req.length > ctx.size || req.offset > ctx.size) {
    const write = req.type === NbdCommand.Write || req.type === NbdCommand.WriteZeroes;
    return {
      errno: write ? NbdErrno.ENOSPC : NbdErrno.EINVAL,
      message: `${name} [${req.offset}, +${req.length}) beyond the export size ${ctx.size}`,
    };
  }
  if (ctx.minBlock > 1 && (req.offset % ctx.minBlock !== 0 || req.length % ctx.minBlock !== 0)) {
    return { errno: NbdErrno.EINVAL, message: `${name} not aligned to ${ctx.minBlock} bytes` };
  }
  return undefined;
}

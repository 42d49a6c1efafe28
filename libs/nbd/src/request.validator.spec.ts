import { describe, expect, it } from 'vitest';
import { sanitizeExtents } from './command.executor.js';
import { CommandFlag, NbdCommand, NbdErrno } from './nbd.constants.js';
import { type TransmissionContext, validateRequest } from './request.validator.js';

const ctx: TransmissionContext = {
  size: 1 << 20,
  readOnly: false,
  structuredReplies: true,
  baseAllocation: true,
  minBlock: 1,
  maxPayload: 32 << 20,
};

const req = (type: number, offset = 0, length = 512, flags = 0) => ({ type, offset, length, flags, cookie: 1n });
const errnoOf = (r: ReturnType<typeof req>, c: Partial<TransmissionContext> = {}) =>
  validateRequest(r, { ...ctx, ...c })?.errno;

describe('validateRequest', () => {
  it('accepts well-formed requests', () => {
    for (const type of [NbdCommand.Read, NbdCommand.Write, NbdCommand.Trim, NbdCommand.WriteZeroes, NbdCommand.Cache]) {
      expect(errnoOf(req(type, (1 << 20) - 512, 512, CommandFlag.Fua))).toBeUndefined();
    }
    expect(errnoOf(req(NbdCommand.Flush, 0, 0))).toBeUndefined();
    expect(errnoOf(req(NbdCommand.BlockStatus, 0, 1 << 20, CommandFlag.ReqOne))).toBeUndefined();
    expect(errnoOf(req(NbdCommand.WriteZeroes, 0, 1 << 20, CommandFlag.NoHole | CommandFlag.FastZero))).toBeUndefined();
    expect(errnoOf(req(NbdCommand.Read, 0, 0))).toBeUndefined();
  });

  it('rejects unknown commands and flags with EINVAL', () => {
    expect(errnoOf(req(99))).toBe(NbdErrno.EINVAL);
    expect(errnoOf(req(NbdCommand.Read, 0, 1, 1 << 12))).toBe(NbdErrno.EINVAL);
    expect(errnoOf(req(NbdCommand.Write, 0, 1, CommandFlag.NoHole))).toBe(NbdErrno.EINVAL);
    expect(errnoOf(req(NbdCommand.Read, 0, 1, CommandFlag.ReqOne))).toBe(NbdErrno.EINVAL);
    expect(errnoOf(req(NbdCommand.Read, 0, 1, CommandFlag.Df), { structuredReplies: false })).toBe(NbdErrno.EINVAL);
  });

  it('maps ranges past the end to ENOSPC for writes and EINVAL otherwise', () => {
    expect(errnoOf(req(NbdCommand.Read, 1 << 20, 1))).toBe(NbdErrno.EINVAL);
    expect(errnoOf(req(NbdCommand.Trim, (1 << 20) - 1, 2))).toBe(NbdErrno.EINVAL);
    expect(errnoOf(req(NbdCommand.BlockStatus, 2 ** 60, 1))).toBe(NbdErrno.EINVAL);
    expect(errnoOf(req(NbdCommand.Write, 1 << 20, 1))).toBe(NbdErrno.ENOSPC);
    expect(errnoOf(req(NbdCommand.WriteZeroes, (1 << 20) + 1, 0))).toBe(NbdErrno.ENOSPC);
  });

  it('refuses changes to a read-only export with EPERM, before range checks', () => {
    for (const type of [NbdCommand.Write, NbdCommand.Trim, NbdCommand.WriteZeroes]) {
      expect(errnoOf(req(type, 2 << 20, 1), { readOnly: true })).toBe(NbdErrno.EPERM);
    }
    expect(errnoOf(req(NbdCommand.Read), { readOnly: true })).toBeUndefined();
  });

  it('refuses oversized payloads, misalignment, stray flush ranges and block status without a context', () => {
    expect(errnoOf(req(NbdCommand.Read, 0, (32 << 20) + 1), { size: 1 << 30 })).toBe(NbdErrno.EOVERFLOW);
    expect(errnoOf(req(NbdCommand.Read, 0, (32 << 20) + 1), { size: 1 << 30, structuredReplies: false })).toBe(
      NbdErrno.EINVAL,
    );
    expect(errnoOf(req(NbdCommand.Trim, 0, 64 << 20), { size: 1 << 30 })).toBeUndefined();
    expect(errnoOf(req(NbdCommand.Read, 1, 512), { minBlock: 512 })).toBe(NbdErrno.EINVAL);
    expect(errnoOf(req(NbdCommand.Flush, 0, 1))).toBe(NbdErrno.EINVAL);
    expect(errnoOf(req(NbdCommand.BlockStatus), { baseAllocation: false })).toBe(NbdErrno.EINVAL);
  });
});

describe('sanitizeExtents', () => {
  it('clips to the request, merges equal neighbours, drops empty extents and honours REQ_ONE', () => {
    const extents = [
      { length: 0, flags: 3 },
      { length: 100, flags: 3 },
      { length: 100, flags: 3 },
      { length: 1000, flags: 0 },
    ];
    expect(sanitizeExtents(extents, 500, false)).toEqual([
      { length: 200, flags: 3 },
      { length: 300, flags: 0 },
    ]);
    expect(sanitizeExtents(extents, 150, true)).toEqual([{ length: 150, flags: 3 }]);
    expect(sanitizeExtents([], 64, false)).toEqual([{ length: 64, flags: 0 }]);
  });
});

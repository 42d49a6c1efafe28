import { randomBytes, randomUUID } from 'node:crypto';
import {
  ErrorCode,
  MAX_DEVICE_STATE_BYTES,
  MigrationRef,
  PrepareMemoryRequest,
  ReleaseMemoryRequest,
  ResumeVmRequest,
  StreamKind,
  ValidationError,
  type Frame,
} from '@wanmig/protocol';
import type { FrameSink } from '@wanmig/stream';
import { describe, expect, it } from 'vitest';
import { checkDeviceState } from './device-state.check.js';
import { sha256 } from './device-state.sink.js';
import { DeviceStateMismatchError, PageOutOfRangeError } from './errors.js';
import { checkRamSize } from './memory.provisioner.js';
import { RamRangeGuard } from './ram-range.guard.js';
import { parseRequest } from './request.parser.js';

const migrationId = randomUUID();
const problemsOf = (work: () => unknown): string[] => {
  try {
    work();
  } catch (err) {
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).code).toBe(ErrorCode.InvalidRequest);
    return (err as ValidationError).problems;
  }
  throw new Error('expected a ValidationError');
};

describe('memory request validation', () => {
  it('takes a good mem.prepare and fills the page size', () => {
    expect(parseRequest(PrepareMemoryRequest, { migrationId, ramBytes: 64 * 1024 * 1024 })).toEqual({
      migrationId,
      ramBytes: 64 * 1024 * 1024,
      pageSize: 4096,
    });
  });

  it('refuses bad mem.prepare bodies, naming every bad key', () => {
    expect(problemsOf(() => parseRequest(PrepareMemoryRequest, { migrationId: 'x', ramBytes: 100 }))).toEqual([
      expect.stringMatching(/^migrationId/),
      expect.stringMatching(/^ramBytes/),
    ]);
    expect(problemsOf(() => parseRequest(PrepareMemoryRequest, { migrationId, ramBytes: 8192.5 }))).toEqual([
      expect.stringMatching(/^ramBytes/),
    ]);
    expect(problemsOf(() => checkRamSize({ ramBytes: 1_500_000, pageSize: 4096 }))).toEqual([
      'ramBytes: 1500000 is not a whole number of 4096-byte pages',
    ]);
    expect(
      problemsOf(() => parseRequest(PrepareMemoryRequest, { migrationId, ramBytes: 8192, pageSize: 8192 })),
    ).toEqual([expect.stringMatching(/^pageSize/)]);
    expect(problemsOf(() => parseRequest(PrepareMemoryRequest, { migrationId, ramBytes: 8192, colour: 1 }))).toEqual([
      expect.stringMatching(/colour/),
    ]);
    expect(
      problemsOf(() => parseRequest(PrepareMemoryRequest, { migrationId: migrationId.toUpperCase(), ramBytes: 8192 })),
    ).toEqual(['migrationId: must be lower-case']);
    expect(problemsOf(() => parseRequest(MigrationRef, []))).toEqual(['body must be a JSON object']);
  });

  it('takes a good vm.resume and refuses a bad hash, size, VM id, driver or port', () => {
    const good = {
      migrationId,
      vmId: 'vm-1',
      deviceStateSha256: 'a'.repeat(64),
      deviceStateBytes: 1000,
      servicePort: 0,
    };
    expect(parseRequest(ResumeVmRequest, good)).toEqual({ ...good, driver: 'sim' });
    const bad = {
      ...good,
      vmId: 'vm 1',
      driver: 'qemu',
      deviceStateSha256: 'A'.repeat(64),
      deviceStateBytes: MAX_DEVICE_STATE_BYTES + 1,
      servicePort: 70_000,
    };
    const problems = problemsOf(() => parseRequest(ResumeVmRequest, bad));
    for (const key of ['vmId', 'driver', 'deviceStateSha256', 'deviceStateBytes', 'servicePort']) {
      expect(problems.some((p) => p.startsWith(`${key}:`))).toBe(true);
    }
    expect(problemsOf(() => parseRequest(ResumeVmRequest, { ...good, deviceStateBytes: 0 }))).toHaveLength(1);
  });

  it('refuses a mem.release whose deleteRam is not a boolean', () => {
    expect(parseRequest(ReleaseMemoryRequest, { migrationId, deleteRam: true })).toEqual({
      migrationId,
      deleteRam: true,
    });
    expect(problemsOf(() => parseRequest(ReleaseMemoryRequest, { migrationId, deleteRam: 'yes' }))).toEqual([
      expect.stringMatching(/^deleteRam/),
    ]);
  });
});

describe('checkDeviceState', () => {
  const blob = randomBytes(1234);
  const held = { blob, sha256: sha256(blob) };
  const request = { migrationId, deviceStateBytes: blob.length, deviceStateSha256: sha256(blob) };
  const mismatchOf = (work: () => unknown): DeviceStateMismatchError => {
    try {
      work();
    } catch (err) {
      expect(err).toBeInstanceOf(DeviceStateMismatchError);
      expect((err as DeviceStateMismatchError).code).toBe(ErrorCode.InvalidRequest);
      return err as DeviceStateMismatchError;
    }
    throw new Error('expected a DeviceStateMismatchError');
  };

  it('returns the held state when size and sha256 match', () => {
    expect(checkDeviceState(held, request)).toBe(held);
  });

  it('says which: nothing received, the size, or the sha256', () => {
    expect(mismatchOf(() => checkDeviceState(undefined, request))).toMatchObject({
      mismatch: 'missing',
      message: expect.stringMatching(/no device state received/) as unknown,
    });
    expect(mismatchOf(() => checkDeviceState(held, { ...request, deviceStateBytes: 1235 }))).toMatchObject({
      mismatch: 'size',
      message: expect.stringMatching(/is 1234 bytes, not deviceStateBytes 1235/) as unknown,
    });
    expect(mismatchOf(() => checkDeviceState(held, { ...request, deviceStateSha256: '0'.repeat(64) }))).toMatchObject({
      mismatch: 'sha256',
      message: expect.stringMatching(/not deviceStateSha256 0{64}/) as unknown,
    });
  });
});

describe('RamRangeGuard', () => {
  const frame = (offset: number, length: number): Frame =>
    ({ header: { offset, length, seq: 7, kind: StreamKind.Memory }, payload: Buffer.alloc(0) }) as unknown as Frame;

  it('passes frames inside the RAM and refuses one reaching past it without calling the sink', async () => {
    const applied: number[] = [];
    const inner: FrameSink = {
      apply: (f) => {
        applied.push(f.header.offset);
        return Promise.resolve();
      },
      sync: () => Promise.resolve(),
    };
    const guard = new RamRangeGuard(inner, 8192, migrationId);
    await guard.apply(frame(4096, 4096));
    const err: unknown = await guard.apply(frame(8192, 4096)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PageOutOfRangeError);
    expect(err).toMatchObject({ code: ErrorCode.FrameOutOfRange, seq: 7, offset: 8192, ramBytes: 8192, migrationId });
    expect(applied).toEqual([4096]);
  });
});

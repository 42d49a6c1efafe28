import { describe, expect, it } from 'vitest';
import { ErrorCode, WanmigError, type MemoryStatusReply } from '@wanmig/protocol';
import { ResumeOutcomeUnknownError, settleResume } from './resume.settle.js';

const timeout = new WanmigError(ErrorCode.Unavailable, 'no answer on vm.resume within 30000 ms');
const base: MemoryStatusReply = {
  migrationId: 'm',
  ramPath: '/r',
  ramBytes: 1,
  pageSize: 4096,
  nextSeq: 1,
  cursor: 0,
  bytesApplied: 0,
  finished: true,
  rejectedFrames: 0,
  deviceStateBytes: 256,
  running: false,
};

/** A clock that moves only when the code sleeps. */
function clock() {
  let t = 0;
  return { now: () => t, sleep: (ms: number) => Promise.resolve(void (t += ms)) };
}

describe('settleResume', () => {
  it('lets a refusal with an answer stand (the destination did not run it)', async () => {
    const refused = new WanmigError(ErrorCode.Conflict, 'RAM differs');
    await expect(
      settleResume({
        migrationId: 'm',
        error: refused,
        status: () => Promise.reject(new Error('not asked')),
        verifyRam: true,
      }),
    ).rejects.toBe(refused);
  });

  it('takes a destination that runs the VM as a resume that went through', async () => {
    const answers: Array<MemoryStatusReply | Error> = [
      new Error('still down'),
      { ...base, running: true, vmId: 'vm1', serviceAddress: '127.0.0.1:9', resumedAt: 42 },
    ];
    const reply = await settleResume({
      migrationId: 'm',
      error: timeout,
      status: () => {
        const next = answers.shift()!;
        return next instanceof Error ? Promise.reject(next) : Promise.resolve(next);
      },
      verifyRam: true,
      ...clock(),
    });
    expect(reply).toEqual({ vmId: 'vm1', serviceAddress: '127.0.0.1:9', resumedAt: 42, ramVerified: true });
  });

  it('rethrows the failure when the destination answers that it does not run the VM', async () => {
    await expect(
      settleResume({
        migrationId: 'm',
        error: timeout,
        status: () => Promise.resolve(base),
        verifyRam: false,
        ...clock(),
      }),
    ).rejects.toBe(timeout);
  });

  it('calls the outcome unknown when the destination stays silent', async () => {
    let asked = 0;
    const err = await settleResume({
      migrationId: 'm',
      error: timeout,
      status: () => {
        asked++;
        return Promise.reject(new Error('down'));
      },
      verifyRam: false,
      settleMs: 10_000,
      askEveryMs: 1000,
      ...clock(),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ResumeOutcomeUnknownError);
    expect((err as WanmigError).code).toBe(ErrorCode.Unavailable);
    expect(asked).toBe(11);
  });
});

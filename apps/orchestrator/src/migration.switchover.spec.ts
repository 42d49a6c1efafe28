import { ErrorCode, MigrationPhase, WanmigError, type MemoryStatusReply } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { ResumeState, settleSwitchover, type SwitchoverWitnesses } from './migration.switchover.js';

const coded = (code: ErrorCode) => new WanmigError(code, code);
const STATUS: MemoryStatusReply = {
  migrationId: 'm',
  ramPath: '/r',
  ramBytes: 4096,
  pageSize: 4096,
  nextSeq: 1,
  cursor: 0,
  bytesApplied: 0,
  finished: true,
  rejectedFrames: 0,
  deviceStateBytes: 256,
  running: false,
};
const PROGRESS = {
  migrationId: 'm',
  phase: 'resuming' as const,
  round: 3,
  ramBytes: 4096,
  dirtyBytes: 0,
  rawBytesSent: 0,
  frameBytesSent: 0,
  throttlePercent: 0,
  elapsedSeconds: 1,
};

/** Witnesses that answer as scripted and count who was asked. */
function witnesses(script: {
  stop: Error | 'ok';
  progress?: Error | Partial<Awaited<ReturnType<SwitchoverWitnesses['memoryProgress']>>>;
  status?: Error | Partial<MemoryStatusReply>;
}) {
  const asked: string[] = [];
  const answer = <T>(who: string, value: Error | T | undefined): Promise<T> => {
    asked.push(who);
    if (value === undefined) return Promise.reject(new Error(`${who} was not expected to be asked`));
    return value instanceof Error ? Promise.reject(value) : Promise.resolve(value);
  };
  const w: SwitchoverWitnesses = {
    stopMemory: () => answer('stop', script.stop === 'ok' ? {} : script.stop),
    memoryProgress: () =>
      answer('progress', script.progress instanceof Error ? script.progress : { ...PROGRESS, ...script.progress }),
    destinationStatus: () =>
      answer(
        'status',
        script.status instanceof Error ? script.status : script.status && { ...STATUS, ...script.status },
      ),
  };
  return { w, asked };
}

describe('settleSwitchover: does the destination run the VM, before anything is rolled back', () => {
  it('an abort memory-precopy accepts: not resumed (it will never resume it now)', async () => {
    const { w, asked } = witnesses({ stop: 'ok' });
    expect(await settleSwitchover(w, MigrationPhase.StopAndCopy)).toBe(ResumeState.NotResumed);
    expect(asked).toEqual(['stop']);
  });

  it('an abort refused: its report says resumed, its rollback not, and in between it is resuming', async () => {
    const conflict = coded(ErrorCode.Conflict);
    const report = { migrationId: 'm' } as never;
    expect(
      await settleSwitchover(witnesses({ stop: conflict, progress: { report } }).w, MigrationPhase.StopAndCopy),
    ).toBe(ResumeState.Resumed);
    expect(
      await settleSwitchover(
        witnesses({ stop: conflict, progress: { error: { code: 'UNAVAILABLE', message: 'x' } } }).w,
        MigrationPhase.StopAndCopy,
      ),
    ).toBe(ResumeState.NotResumed);
    expect(await settleSwitchover(witnesses({ stop: conflict, progress: {} }).w, MigrationPhase.StopAndCopy)).toBe(
      ResumeState.Resuming,
    );
    expect(
      await settleSwitchover(
        witnesses({ stop: conflict, progress: coded(ErrorCode.Unavailable) }).w,
        MigrationPhase.StopAndCopy,
      ),
    ).toBe(ResumeState.Unknown);
  });

  it('memory-precopy forgot it (restarted) in STOP_AND_COPY: the destination’s word decides', async () => {
    const notFound = coded(ErrorCode.NotFound);
    const cases: Array<[Error | Partial<MemoryStatusReply>, ResumeState]> = [
      [{ running: true }, ResumeState.Resumed],
      [{ running: false }, ResumeState.NotResumed],
      [coded(ErrorCode.NotFound), ResumeState.NotResumed],
      [coded(ErrorCode.Unavailable), ResumeState.Unknown],
    ];
    for (const [status, expected] of cases) {
      const { w, asked } = witnesses({ stop: notFound, status });
      expect(await settleSwitchover(w, MigrationPhase.StopAndCopy)).toBe(expected);
      expect(asked).toEqual(['stop', 'status']);
    }
  });

  it('memory-precopy forgot it before STOP_AND_COPY: nothing can run at the destination, nobody else is asked', async () => {
    const { w, asked } = witnesses({ stop: coded(ErrorCode.NotFound) });
    expect(await settleSwitchover(w, MigrationPhase.MemPrecopy)).toBe(ResumeState.NotResumed);
    expect(asked).toEqual(['stop']);
  });

  it('memory-precopy does not answer: unknown (the source stays paused, nothing is undone)', async () => {
    for (const failure of [coded(ErrorCode.Unavailable), new Error('connection closed')]) {
      const { w, asked } = witnesses({ stop: failure });
      expect(await settleSwitchover(w, MigrationPhase.StopAndCopy)).toBe(ResumeState.Unknown);
      expect(asked).toEqual(['stop']);
    }
  });
});

import { describe, expect, it } from 'vitest';
import { ErrorCode, MigrationPhase, WanmigError } from '@wanmig/protocol';
import { ServiceAwayError } from './errors.js';
import { ServiceAbsence } from './service.absence.js';

const away = (): Promise<never> => Promise.reject(new WanmigError(ErrorCode.Unavailable, 'no responders'));
const lost = (): Promise<never> => Promise.reject(new WanmigError(ErrorCode.NotFound, 'no migration'));

function absence(clock: { t: number }, lines: string[] = []) {
  return new ServiceAbsence({
    migrationId: 'm-1',
    site: 'site-a',
    deadlineMs: 10_000,
    log: (line) => lines.push(line),
    pause: () => {
      clock.t += 1000;
      return Promise.resolve();
    },
    now: () => clock.t,
  });
}

describe('ServiceAbsence', () => {
  it('tolerates a service that does not answer until the deadline, then names it and how long', async () => {
    const clock = { t: 0 };
    const lines: string[] = [];
    const watch = absence(clock, lines);
    expect(await watch.call('disk-transfer', MigrationPhase.DiskBulk, away)).toEqual({ ok: false });
    clock.t = 10_000;
    expect(await watch.call('disk-transfer', MigrationPhase.DiskBulk, away)).toEqual({ ok: false });
    clock.t = 10_001;
    const err = await watch.call('disk-transfer', MigrationPhase.DiskBulk, away).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServiceAwayError);
    expect(err).toMatchObject({
      code: ErrorCode.Unavailable,
      service: 'disk-transfer',
      site: 'site-a',
      awayMs: 10_001,
    });
    expect((err as Error).message).toBe('disk-transfer at site-a did not answer for 10.0 s (service deadline 10 s)');
    expect(lines).toHaveLength(1);
  });

  it('starts counting again once the service answered', async () => {
    const clock = { t: 0 };
    const lines: string[] = [];
    const watch = absence(clock, lines);
    await watch.call('memory-precopy', MigrationPhase.MemPrecopy, away);
    clock.t = 9000;
    expect(await watch.call('memory-precopy', MigrationPhase.MemPrecopy, () => Promise.resolve(7))).toEqual({
      ok: true,
      value: 7,
    });
    expect(lines[1]).toContain('memory-precopy at site-a answers again after 9.0 s');
    clock.t = 18_000;
    expect(await watch.call('memory-precopy', MigrationPhase.MemPrecopy, away)).toEqual({ ok: false });
    clock.t = 27_000;
    expect(await watch.call('memory-precopy', MigrationPhase.MemPrecopy, away)).toEqual({ ok: false });
  });

  it('keeps each service apart, and passes other errors on', async () => {
    const clock = { t: 0 };
    const watch = absence(clock);
    await watch.call('disk-transfer', MigrationPhase.DiskBulk, away);
    clock.t = 20_000;
    expect(await watch.call('memory-precopy', MigrationPhase.DiskBulk, away)).toEqual({ ok: false });
    await expect(watch.call('memory-precopy', MigrationPhase.DiskBulk, lost)).rejects.toMatchObject({
      code: ErrorCode.NotFound,
    });
    await expect(watch.call('disk-transfer', MigrationPhase.DiskBulk, away)).rejects.toBeInstanceOf(ServiceAwayError);
  });

  it('untilAnswered retries through the absence and gives up at the deadline', async () => {
    const clock = { t: 0 };
    let calls = 0;
    const answer = await absence(clock).untilAnswered('disk-transfer', MigrationPhase.DiskBulk, () =>
      ++calls < 4 ? away() : Promise.resolve('started'),
    );
    expect(answer).toBe('started');
    expect(calls).toBe(4);
    await expect(absence(clock).untilAnswered('disk-transfer', MigrationPhase.DiskBulk, away)).rejects.toBeInstanceOf(
      ServiceAwayError,
    );
  });

  it('progress asks a service that lost the migration again, and without restart passes NOT_FOUND on', async () => {
    const clock = { t: 0 };
    let restarted = 0;
    const restart = () => {
      restarted++;
      return Promise.resolve();
    };
    const watch = absence(clock);
    expect(await watch.progress('memory-precopy', MigrationPhase.MemPrecopy, lost, restart)).toBeUndefined();
    expect(restarted).toBe(1);
    expect(await watch.progress('memory-precopy', MigrationPhase.MemPrecopy, away, restart)).toBeUndefined();
    expect(restarted).toBe(1);
    expect(
      await watch.progress('memory-precopy', MigrationPhase.MemPrecopy, () => Promise.resolve({ round: 2 })),
    ).toEqual({ round: 2 });
    await expect(watch.progress('memory-precopy', MigrationPhase.StopAndCopy, lost)).rejects.toMatchObject({
      code: ErrorCode.NotFound,
    });
  });
});

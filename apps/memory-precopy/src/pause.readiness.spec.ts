import type { NatsConnection } from '@nats-io/nats-core';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '@wanmig/protocol';
import { PauseHeldOffError } from './errors.js';
import { DISK_SETTLE_MAX_MS, PauseReadiness } from './pause.readiness.js';

type Answer = { response: unknown } | { err: { code: string; message: string } } | 'silent';

/** Answers each control subject (by its verb's suffix) as the map says; 'silent' as a service that is away. */
function fakeNats(answers: Record<string, Answer>): NatsConnection {
  return {
    request: (subject: string) => {
      const key = Object.keys(answers).find((k) => subject.endsWith(k));
      const answer = key ? answers[key] : 'silent';
      if (answer === 'silent') return Promise.reject(new Error('no responders'));
      return Promise.resolve({ string: () => JSON.stringify(answer) });
    },
  } as unknown as NatsConnection;
}

const ok = { response: {} };
const holding = (inStep: boolean) => ({ response: { phase: 'holding', inStep, dirtyBytes: 4096 } });

function readiness(answers: Record<string, Answer>, clock: { t: number }, disk = true) {
  return new PauseReadiness({
    nc: fakeNats(answers),
    migrationId: 'm-1',
    site: 'site-a',
    destSite: 'site-b',
    ...(disk ? { diskMigrationId: 'm-1' } : {}),
    giveUpAfterMs: 60_000,
    now: () => clock.t,
  });
}

describe('PauseReadiness', () => {
  it('lets the pause start when the destination answers and the disk holds in step', async () => {
    const clock = { t: 0 };
    const check = readiness({ 'mem.status': ok, 'disk.status': ok, 'disk.progress': holding(true) }, clock);
    expect(await check.check()).toBeUndefined();
  });

  it('holds it off while delta-apply is away, and gives up past the deadline naming why', async () => {
    const clock = { t: 0 };
    const check = readiness({ 'disk.progress': holding(true) }, clock);
    expect(await check.check()).toBe('delta-apply at site-b does not answer');
    clock.t = 60_001;
    const err = await check.check().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PauseHeldOffError);
    expect(err).toMatchObject({ code: ErrorCode.Unavailable, waitedMs: 60_001 });
    expect((err as Error).message).toMatch(/not paused: delta-apply at site-b does not answer.*for 60\.0 s/);
  });

  it('holds it off while disk-transfer re-sends what its restart left unsure, or does not know the migration', async () => {
    const clock = { t: 0 };
    const resending = readiness(
      { 'mem.status': ok, 'disk.status': ok, 'disk.progress': { response: { phase: 'catch-up' } } },
      clock,
    );
    expect(await resending.check()).toBe('disk-transfer at site-a is in catch-up, not holding the disk in step');
    const lost = readiness(
      {
        'mem.status': ok,
        'disk.status': ok,
        'disk.progress': { err: { code: 'NOT_FOUND', message: 'no migration' } },
      },
      clock,
    );
    expect(await lost.check()).toBe('disk-transfer at site-a does not know m-1');
  });

  it('waits for a disk that holds more than the pause drains only so long', async () => {
    const clock = { t: 0 };
    const check = readiness({ 'mem.status': ok, 'disk.status': ok, 'disk.progress': holding(false) }, clock);
    expect(await check.check()).toMatch(/4096 dirty bytes/);
    clock.t = DISK_SETTLE_MAX_MS + 1;
    expect(await check.check()).toBeUndefined();
  });

  it('asks only the destination for a migration without a disk, and reports a failed receive', async () => {
    const clock = { t: 0 };
    const failed = { response: { failure: { code: 'RECORD_CORRUPT', message: 'frame kept failing' } } };
    expect(await readiness({ 'mem.status': ok }, clock, false).check()).toBeUndefined();
    expect(await readiness({ 'mem.status': failed }, clock, false).check()).toBe(
      'delta-apply at site-b: frame kept failing',
    );
  });
});

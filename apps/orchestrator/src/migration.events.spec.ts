import { describe, expect, it } from 'vitest';
import { MigrationEventKind, MigrationEventSubjects } from '@wanmig/protocol';
import { buildMigrationEvent, orchestratorSource } from './migration.events.js';

describe('migration event envelope', () => {
  const time = new Date('2030-01-01T00:00:00.000Z');

  it('builds a CloudEvents 1.0 envelope with a fresh UUID per event', () => {
    const a = buildMigrationEvent('site-a', MigrationEventKind.Failed, 'm-1', { code: 'UNAVAILABLE' }, time);
    const b = buildMigrationEvent('site-a', MigrationEventKind.Failed, 'm-1', { code: 'UNAVAILABLE' }, time);
    expect(a).toEqual({
      specversion: '1.0',
      id: a.id,
      source: 'wanmig/orchestrator/site-a',
      type: 'io.wanmig.migration.failed',
      subject: 'm-1',
      time: '2030-01-01T00:00:00.000Z',
      datacontenttype: 'application/json',
      data: { code: 'UNAVAILABLE' },
    });
    expect(a.id).not.toBe(b.id);
  });

  it('keeps a given id (a retry must carry the same Nats-Msg-Id)', () => {
    const event = buildMigrationEvent('site-b', MigrationEventKind.RolledBack, 'm-2', null, time, 'fixed');
    expect(event.id).toBe('fixed');
    expect(orchestratorSource('site-b')).toBe(event.source);
  });

  it('puts site, migration and kind in the subject, and refuses unsafe tokens', () => {
    expect(MigrationEventSubjects.event('site-a', 'm-1', MigrationEventKind.Progress)).toBe(
      'wanmig.v1.events.migration.site-a.m-1.progress',
    );
    expect(MigrationEventSubjects.migration('site-a', 'm-1')).toBe('wanmig.v1.events.migration.site-a.m-1.>');
    expect(() => MigrationEventSubjects.migration('site-a', 'a.b')).toThrow(TypeError);
    expect(() => MigrationEventSubjects.site('Site A')).toThrow(TypeError);
  });
});

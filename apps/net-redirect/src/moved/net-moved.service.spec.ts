import { WanmigError, type NetMovedConfirmation, type NetMovedEvent } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { readAnswer, type ControllerHook, type HookOutcome } from './controller.hook.js';
import type { MoveEventSink } from './move-event.sink.js';
import { NetMovedService } from './net-moved.service.js';

const MIGRATION = '0b6f1c1e-4d2a-4c55-9a7e-2f0d8e1b3c4a';
const MOVE = { migrationId: MIGRATION, vmId: 'shop', addresses: ['10.0.0.5'], fromSite: 'site-a', toSite: 'site-b' };
const NOW = new Date('2025-01-01T10:00:00.000Z');

class FakeSink implements MoveEventSink {
  readonly stored: { subject: string; event: NetMovedEvent }[] = [];
  failures = 0;
  publish(subject: string, event: NetMovedEvent) {
    if (this.failures > 0) {
      this.failures--;
      return Promise.reject(new Error('JetStream not enabled'));
    }
    this.stored.push({ subject, event });
    return Promise.resolve({ seq: this.stored.length, duplicate: false });
  }
}

/** Answers each ask with the next scripted outcome (the last one repeats). */
class FakeHook implements ControllerHook {
  readonly asked: { subject: string; event: NetMovedEvent; timeoutMs: number; answers: number }[] = [];
  constructor(private readonly outcomes: HookOutcome[]) {}
  ask(subject: string, payload: string, options: { timeoutMs: number; answers: number }) {
    this.asked.push({ subject, event: JSON.parse(payload) as NetMovedEvent, ...options });
    return Promise.resolve(this.outcomes.length > 1 ? this.outcomes.shift()! : this.outcomes[0]);
  }
}

const applied = (controller: string): NetMovedConfirmation => ({ applied: true, controller, ms: 1 });
const none: HookOutcome = { answers: [], noResponders: true };

function service(hook: FakeHook, sink = new FakeSink()) {
  return { moved: new NetMovedService('site-a', sink, hook, () => NOW), sink, hook };
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return err instanceof WanmigError ? `${err.code}: ${err.message}` : `untyped: ${String(err)}`;
  }
  return 'resolved';
}

describe('NetMovedService', () => {
  it('stores the move as a CloudEvent, sends it on the hook and reports the confirmation', async () => {
    const { moved, sink, hook } = service(new FakeHook([{ answers: [applied('lb-1')], noResponders: false }]));
    const reply = await moved.moved({ ...MOVE, addresses: ['10.0.0.5', 'fd00::5', '10.0.0.5'] });
    const subject = `wanmig.v1.events.migration.site-a.${MIGRATION}.net-moved`;
    expect(sink.stored).toHaveLength(1);
    const event = sink.stored[0].event;
    expect(sink.stored[0].subject).toBe(subject);
    expect(event).toEqual({
      specversion: '1.0',
      id: event.id,
      source: 'wanmig/net-redirect/site-a',
      type: 'io.wanmig.net.moved',
      subject: MIGRATION,
      time: NOW.toISOString(),
      datacontenttype: 'application/json',
      data: { ...MOVE, addresses: ['10.0.0.5', 'fd00::5'] },
    });
    expect(hook.asked).toEqual([{ subject: 'wanmig.v1.hooks.net.moved', event, timeoutMs: 2000, answers: 1 }]);
    expect(reply).toEqual({
      migrationId: MIGRATION,
      eventId: event.id,
      eventSubject: subject,
      confirmations: [applied('lb-1')],
      confirmed: true,
    });
  });

  it('without `required`, reports an unconfirmed move; with it, fails UNAVAILABLE (nobody, too few) or CONFLICT (refused)', async () => {
    const quiet = service(new FakeHook([none]));
    expect(await quiet.moved.moved(MOVE)).toMatchObject({
      confirmed: false,
      confirmations: [],
      reason: 'no controller listens on the hook',
    });

    const required = { ...MOVE, confirm: { required: true, timeoutMs: 300, controllers: 2 } };
    expect(await codeOf(service(new FakeHook([none])).moved.moved(required))).toBe(
      `UNAVAILABLE: the move of migration ${MIGRATION} is not confirmed on wanmig.v1.hooks.net.moved: no controller listens on the hook`,
    );
    expect(
      await codeOf(service(new FakeHook([{ answers: [applied('lb-1')], noResponders: false }])).moved.moved(required)),
    ).toMatch(/^UNAVAILABLE: .*: 1 of 2 controllers answered within 300 ms$/);
    const refusal = { applied: false, reason: 'VIP pool full', controller: 'lb-2', ms: 2 };
    expect(
      await codeOf(
        service(new FakeHook([{ answers: [applied('lb-1'), refusal], noResponders: false }])).moved.moved(required),
      ),
    ).toMatch(/^CONFLICT: .*: lb-2 refused: VIP pool full$/);
  });

  it('answers a repeat as before with the same event, asks again when a repeat needs the confirmation it lacked', async () => {
    const { moved, sink, hook } = service(
      new FakeHook([none, none, { answers: [applied('dns')], noResponders: false }]),
    );
    const first = await moved.moved(MOVE);
    expect(await moved.moved(MOVE)).toEqual(first);
    expect(hook.asked).toHaveLength(1);
    const required = { ...MOVE, confirm: { required: true } };
    expect(await codeOf(moved.moved(required))).toMatch(/^UNAVAILABLE: /);
    const confirmed = await moved.moved(required);
    expect(confirmed).toMatchObject({ eventId: first.eventId, confirmed: true, confirmations: [applied('dns')] });
    expect(await moved.moved(MOVE)).toEqual(confirmed);
    expect(sink.stored).toHaveLength(1);
    expect(hook.asked.map((a) => a.event.id)).toEqual([first.eventId, first.eventId, first.eventId]);
    expect(await codeOf(moved.moved({ ...MOVE, toSite: 'site-c' }))).toMatch(
      /^CONFLICT: migration .*: its move is already shop \(10\.0\.0\.5\) from site-a to site-b$/,
    );
  });

  it('fails UNAVAILABLE when the event cannot be stored, and stores it on a retry', async () => {
    const sink = new FakeSink();
    sink.failures = 1;
    const { moved, hook } = service(new FakeHook([none]), sink);
    expect(await codeOf(moved.moved(MOVE))).toBe(
      `UNAVAILABLE: cannot publish the move of migration ${MIGRATION} on wanmig.v1.events.migration.site-a.${MIGRATION}.net-moved: JetStream not enabled`,
    );
    expect(hook.asked).toHaveLength(0);
    expect((await moved.moved(MOVE)).eventId).toBe(sink.stored[0].event.id);
  });

  it('refuses bad input: no addresses, not an IP, the same site, unknown keys', async () => {
    const { moved, sink } = service(new FakeHook([none]));
    for (const body of [
      { ...MOVE, addresses: [] },
      { ...MOVE, addresses: ['shop.example.com'] },
      { ...MOVE, toSite: 'site-a' },
      { ...MOVE, confirm: { required: 'yes' } },
      { ...MOVE, ttl: 5 },
    ]) {
      expect(await codeOf(moved.moved(body))).toMatch(/^INVALID_REQUEST: /);
    }
    expect(await codeOf(moved.moved({ ...MOVE, addresses: [] }))).toMatch(
      /addresses: addresses must contain at least 1/,
    );
    expect(sink.stored).toEqual([]);
  });
});

describe('readAnswer', () => {
  const msg = (text: string) => ({ string: () => text });
  it('takes applied, reason and controller, and counts anything else as not applied', () => {
    expect(readAnswer(msg('{"applied":true,"controller":"lb-1"}'), 2)).toEqual({
      applied: true,
      controller: 'lb-1',
      ms: 2,
    });
    expect(readAnswer(msg('{"applied":false,"reason":"no"}'), 1)).toEqual({ applied: false, reason: 'no', ms: 1 });
    expect(readAnswer(msg('ok'), 1)).toEqual({ applied: false, reason: 'malformed answer: ok', ms: 1 });
    expect(readAnswer(msg('{"applied":"yes"}'), 1)).toMatchObject({ applied: false, reason: /^malformed answer/ });
  });
});

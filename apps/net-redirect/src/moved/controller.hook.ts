import { createInbox, type Msg, type NatsConnection } from '@nats-io/nats-core';
import type { NetMovedConfirmation, NetMovedHookAnswer } from '@wanmig/protocol';

export interface HookOutcome {
  answers: NetMovedConfirmation[];
  /** Nobody subscribes to the hook subject (the server said so at once). */
  noResponders: boolean;
}

/** Asks the external controllers on the hook subject and gathers their answers. The seam unit specs replace. */
export interface ControllerHook {
  ask(subject: string, payload: string, options: { timeoutMs: number; answers: number }): Promise<HookOutcome>;
}

/**
 * Over NATS: one request on the hook subject with a private inbox as reply, then every answer until `answers` came
 * or `timeoutMs` passed. A 503 status on the inbox is the server saying no one listens.
 */
export class NatsControllerHook implements ControllerHook {
  constructor(private readonly nc: NatsConnection) {}

  ask(subject: string, payload: string, options: { timeoutMs: number; answers: number }): Promise<HookOutcome> {
    const answers: NetMovedConfirmation[] = [];
    const t0 = performance.now();
    const inbox = createInbox();
    return new Promise<HookOutcome>((resolve) => {
      let done = false;
      const finish = (noResponders: boolean) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        sub.unsubscribe();
        resolve({ answers, noResponders });
      };
      const sub = this.nc.subscribe(inbox, {
        callback: (err, msg) => {
          if (err) return finish(false);
          if (msg.headers?.code === 503 && msg.data.length === 0) return finish(answers.length === 0);
          answers.push(readAnswer(msg, Math.round((performance.now() - t0) * 10) / 10));
          if (answers.length >= options.answers) finish(false);
        },
      });
      const timer = setTimeout(() => finish(false), options.timeoutMs);
      this.nc.publish(subject, payload, { reply: inbox });
    });
  }
}

/** A controller's answer; anything but `{ applied: true|false, … }` counts as not applied, with why. */
export function readAnswer(msg: Pick<Msg, 'string'>, ms: number): NetMovedConfirmation {
  let value: unknown;
  try {
    value = JSON.parse(msg.string());
  } catch {
    return { applied: false, reason: `malformed answer: ${msg.string().slice(0, 200)}`, ms };
  }
  const answer = value as Partial<NetMovedHookAnswer> | null;
  if (answer === null || typeof answer !== 'object' || typeof answer.applied !== 'boolean') {
    return { applied: false, reason: `malformed answer: ${JSON.stringify(value).slice(0, 200)}`, ms };
  }
  return {
    applied: answer.applied,
    ...(typeof answer.reason === 'string' ? { reason: answer.reason.slice(0, 500) } : {}),
    ...(typeof answer.controller === 'string' ? { controller: answer.controller.slice(0, 200) } : {}),
    ms,
  };
}

import type { Msg, NatsConnection } from '@nats-io/nats-core';

type Callback = (err: Error | null, msg: Msg) => void;

/**
 * An in-process stand-in for a NATS connection, for unit specs of the stream logic only: exact
 * subjects, asynchronous delivery, and a `drop` hook to lose messages on purpose. Integration
 * suites use a real nats-server instead.
 */
export class FakeNats {
  /** Return true to lose a message; may also alter the (copied) bytes in flight. */
  drop: (subject: string, data: Uint8Array) => boolean = () => false;
  /** When false every message is lost, as on a cut link; requests time out. */
  linkUp = true;
  private readonly subs = new Map<string, Set<Callback>>();

  connection(): NatsConnection {
    return this as unknown as NatsConnection;
  }

  publish(subject: string, data?: Uint8Array): void {
    // Copy first: the hook may corrupt what is "on the wire", never the sender's own buffer.
    const copy = new Uint8Array(data ?? new Uint8Array());
    if (!this.linkUp || this.drop(subject, copy)) return;
    setImmediate(() => {
      for (const cb of this.subs.get(subject) ?? []) cb(null, this.msg(subject, copy));
    });
  }

  subscribe(subject: string, opts: { callback: Callback }): { unsubscribe(): void } {
    const set = this.subs.get(subject) ?? new Set<Callback>();
    set.add(opts.callback);
    this.subs.set(subject, set);
    return { unsubscribe: () => set.delete(opts.callback) };
  }

  request(subject: string, data: Uint8Array, opts: { timeout: number }): Promise<Msg> {
    return new Promise((resolve, reject) => {
      const handlers = this.subs.get(subject);
      if (!this.linkUp || !handlers || handlers.size === 0) {
        setTimeout(() => reject(new Error('timeout')), Math.min(opts.timeout, 20));
        return;
      }
      const msg = this.msg(subject, data, (reply) => resolve(this.msg('reply', reply)));
      setImmediate(() => {
        for (const cb of handlers) cb(null, msg);
      });
    });
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  private msg(subject: string, data: Uint8Array, respond?: (data: Uint8Array) => void): Msg {
    return {
      subject,
      data,
      respond: (reply?: Uint8Array) => {
        respond?.(reply ?? new Uint8Array());
        return true;
      },
    } as unknown as Msg;
  }
}

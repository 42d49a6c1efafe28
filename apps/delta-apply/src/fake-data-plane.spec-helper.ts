import type { Msg, NatsConnection } from '@nats-io/nats-core';
import type { DataPlaneConnection } from './data-plane.connection.js';

type Callback = (err: Error | null, msg: Msg) => void;

/**
 * The data-plane connection for unit specs of delta-apply's services: exact subjects, delivery on
 * the next turn, and a record of everything published (acks). Integration suites use nats-server.
 */
export class FakeDataPlane {
  readonly published: Array<{ subject: string; data: Uint8Array }> = [];
  private readonly subs = new Map<string, Set<Callback>>();

  get connection(): DataPlaneConnection {
    return { nc: this as unknown as NatsConnection, maxPayload: 1024 * 1024 } as DataPlaneConnection;
  }

  /** Hands `data` to whoever subscribed to `subject`, as a message from the wire. */
  deliver(subject: string, data: Uint8Array): void {
    for (const cb of this.subs.get(subject) ?? []) {
      cb(null, { subject, data: new Uint8Array(data), respond: () => true } as unknown as Msg);
    }
  }

  /** Subjects with at least one subscriber. */
  get subjects(): string[] {
    return [...this.subs].filter(([, set]) => set.size > 0).map(([subject]) => subject);
  }

  publish(subject: string, data?: Uint8Array): void {
    this.published.push({ subject, data: data ?? new Uint8Array() });
  }

  subscribe(subject: string, opts: { callback: Callback }): { unsubscribe(): void } {
    const set = this.subs.get(subject) ?? new Set<Callback>();
    set.add(opts.callback);
    this.subs.set(subject, set);
    return { unsubscribe: () => set.delete(opts.callback) };
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }
}

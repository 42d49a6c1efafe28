import { RelayState, RelayStopReason, type RelayStatusReply, type StartRelayRequest } from '@wanmig/protocol';
import type { ForwarderHandle } from './forwarder.handle.js';

/**
 * One migration's relay at the old site: a forwarder (in this process, or a child inside `listen.netns`) with its
 * limits. `listening` until a stop, then `draining` while connections are still open (a graceful stop), then
 * `stopped`. The hard limit `maxMs` cuts everything; `idleMs` stops it once no connection has been open that long
 * (counted from the start too: a relay nobody needs goes away).
 */
export class NetRelay {
  private state: RelayState = RelayState.Listening;
  private stoppedReason?: RelayStopReason;
  private pendingReason?: RelayStopReason;
  private error?: string;
  private readonly startedAt: Date;
  private stoppedAt?: Date;
  private maxTimer?: NodeJS.Timeout;
  private idleTimer?: NodeJS.Timeout;
  private finishing?: Promise<void>;
  /** Resolves once the relay is stopped and its forwarder gone. */
  readonly stopped: Promise<void>;
  private resolveStopped!: () => void;

  constructor(
    readonly request: StartRelayRequest,
    private readonly forwarder: ForwarderHandle,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.startedAt = now();
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
    forwarder.onChange((error) => this.changed(error));
    this.maxTimer = setTimeout(() => void this.finish(RelayStopReason.MaxTime), request.maxMs);
    this.armIdle();
  }

  get current(): RelayState {
    return this.state;
  }

  /**
   * `force`, or nothing open: cut everything, resolved once stopped. Otherwise graceful: stop accepting and resolve at
   * once, `draining`; the relay stops when its last connection ends (or at `maxMs`).
   */
  async stop(force: boolean, reason: RelayStopReason = RelayStopReason.Requested): Promise<void> {
    if (this.state === RelayState.Stopped) return;
    if (force || this.forwarder.counters().active === 0) return this.finish(reason);
    if (this.state === RelayState.Listening) {
      this.state = RelayState.Draining;
      this.pendingReason = reason;
      this.forwarder.stopAccepting();
    }
  }

  status(): RelayStatusReply {
    const c = this.forwarder.counters();
    const { listen, target, migrationId } = this.request;
    return {
      migrationId,
      state: this.state,
      listen: {
        host: this.forwarder.address.host || listen.host,
        port: this.forwarder.address.port,
        ...(listen.netns === undefined || listen.netns === null ? {} : { netns: listen.netns }),
      },
      target: { host: target.host, port: target.port },
      connections: { accepted: c.accepted, active: c.active, closed: c.closed, failed: c.failed },
      bytes: { in: c.bytesIn, out: c.bytesOut },
      startedAt: this.startedAt.toISOString(),
      ...(this.stoppedAt ? { stoppedAt: this.stoppedAt.toISOString() } : {}),
      ...(this.stoppedReason ? { stoppedReason: this.stoppedReason } : {}),
      ...(this.error ? { error: this.error } : {}),
      ...(this.forwarder.pid !== undefined ? { pid: this.forwarder.pid } : {}),
    };
  }

  private changed(error?: string): void {
    if (this.finishing !== undefined) return;
    if (error !== undefined) {
      this.error = error;
      void this.finish(RelayStopReason.Failed);
      return;
    }
    if (this.state === RelayState.Draining && this.forwarder.counters().active === 0) {
      void this.finish(this.pendingReason ?? RelayStopReason.Requested);
      return;
    }
    this.armIdle();
  }

  /** (Re)starts the idle clock while no connection is open; stops it while one is. */
  private armIdle(): void {
    const { idleMs } = this.request;
    if (idleMs === undefined || idleMs === null) return;
    const active = this.forwarder.counters().active;
    if (active > 0) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    } else if (this.idleTimer === undefined) {
      this.idleTimer = setTimeout(() => {
        this.idleTimer = undefined;
        if (this.forwarder.counters().active === 0) void this.finish(RelayStopReason.Idle);
      }, idleMs);
    }
  }

  private finish(reason: RelayStopReason): Promise<void> {
    this.finishing ??= (async () => {
      clearTimeout(this.maxTimer);
      clearTimeout(this.idleTimer);
      await this.forwarder.destroy();
      this.state = RelayState.Stopped;
      this.stoppedReason = reason;
      this.stoppedAt = this.now();
      this.resolveStopped();
    })();
    return this.finishing;
  }
}

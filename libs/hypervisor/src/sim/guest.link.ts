import { setTimeout as sleep } from 'node:timers/promises';
import { ControlConnectionLostError, GuestDiedError, GuestNotFoundError } from '../errors.js';
import { ControlClient } from './control.client.js';
import { type ControlOp } from './control.protocol.js';
import { type SimGuestProcess } from './guest.process.js';
import { isProcessAlive, readLogTail, type GuestPaths, type GuestRuntimeInfo } from './runtime.paths.js';

export interface GuestLinkOptions {
  vmId: string;
  runtimeDir: string;
  paths: GuestPaths;
  info: GuestRuntimeInfo;
  /** Set when this process started the guest: exit code and signal are then known. */
  process?: SimGuestProcess;
  controlTimeoutMs: number;
}

/** How long a vanished connection waits for the guest's pid to go before calling it died or lost. */
const DEATH_GRACE_MS = 1000;

/**
 * The driver's connection to one guest: connects its control socket on first use (and again after
 * a drop), and turns a refused or lost connection into the error that explains it: the guest died
 * (with its exit and log tail) or is not there.
 */
export class GuestLink {
  private client: Promise<ControlClient> | undefined;
  private closed = false;

  constructor(readonly o: GuestLinkOptions) {}

  get vmId(): string {
    return this.o.vmId;
  }

  async call<T>(op: ControlOp, args: Record<string, unknown> = {}, timeoutMs = this.o.controlTimeoutMs): Promise<T> {
    const client = await this.connect();
    try {
      return await client.call<T>(op, args, timeoutMs);
    } catch (err) {
      if (err instanceof ControlConnectionLostError) throw await this.diagnose(err);
      throw err;
    }
  }

  /** True while the guest's process exists. */
  get alive(): boolean {
    const exit = this.o.process?.exit;
    return exit === undefined && isProcessAlive(this.o.info.pid);
  }

  /** Waits until the guest's process is gone; false if it is still there after `timeoutMs`. */
  async waitGone(timeoutMs: number): Promise<boolean> {
    if (this.o.process) {
      const timer = new AbortController();
      const expired = sleep(timeoutMs, false, { signal: timer.signal }).catch(() => false);
      const gone = await Promise.race([this.o.process.exited.then(() => true), expired]);
      timer.abort();
      return gone;
    }
    const until = Date.now() + timeoutMs;
    while (isProcessAlive(this.o.info.pid)) {
      if (Date.now() > until) return false;
      await sleep(20);
    }
    return true;
  }

  close(): void {
    this.closed = true;
    void this.client?.then((c) => c.close()).catch(() => undefined);
    this.client = undefined;
  }

  private async connect(): Promise<ControlClient> {
    if (this.closed) throw new GuestNotFoundError(this.o.vmId, this.o.runtimeDir);
    const existing = this.client && (await this.client.catch(() => undefined));
    if (existing?.open) return existing;
    this.client = ControlClient.connect(this.o.info.controlSocket, this.o.vmId);
    try {
      return await this.client;
    } catch (err) {
      this.client = undefined;
      throw await this.diagnose(err);
    }
  }

  /** The guest died (its exit and log tail), or else is not reachable: GuestNotFoundError / the cause. */
  private async diagnose(cause: unknown): Promise<Error> {
    const gone = await this.waitGone(DEATH_GRACE_MS);
    if (gone) {
      const exit = this.o.process?.exit;
      return new GuestDiedError(this.o.vmId, {
        exitCode: exit?.code,
        signal: exit?.signal,
        stderrTail: readLogTail(this.o.paths.logFile),
        cause,
      });
    }
    if (cause instanceof ControlConnectionLostError) return cause;
    return new GuestNotFoundError(this.o.vmId, this.o.runtimeDir, { cause });
  }
}

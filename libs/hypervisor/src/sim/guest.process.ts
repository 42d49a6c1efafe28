import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { GuestStartError } from '../errors.js';
import { readLogTail, type GuestRuntimeInfo } from './runtime.paths.js';
import { GUEST_READY_PREFIX } from './sim.constants.js';

export interface GuestExit {
  code: number | null;
  signal: string | null;
}

export interface GuestSpawnOptions {
  vmId: string;
  entry: string;
  args: string[];
  /** The guest's stderr is appended here. */
  logFile: string;
  /** Let the guest outlive this process (no parent watch, not waited for). */
  detached: boolean;
  readyTimeoutMs: number;
}

/** A guest process this process started: its pid, its exit, its log. */
export class SimGuestProcess {
  private exitInfo: GuestExit | undefined;
  readonly exited: Promise<GuestExit>;

  private constructor(
    private readonly child: ChildProcess,
    readonly vmId: string,
    readonly logFile: string,
  ) {
    this.exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      }),
    );
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** Undefined while it runs. */
  get exit(): GuestExit | undefined {
    return this.exitInfo;
  }

  logTail(maxBytes = 4096): string {
    return readLogTail(this.logFile, maxBytes);
  }

  /** Starts the guest and waits for its ready line (GuestStartError with its log tail otherwise). */
  static async spawn(o: GuestSpawnOptions): Promise<{ process: SimGuestProcess; info: GuestRuntimeInfo }> {
    const logFd = openSync(o.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [o.entry, ...o.args], {
        stdio: ['ignore', 'pipe', logFd],
        detached: o.detached,
      });
    } finally {
      closeSync(logFd);
    }
    const proc = new SimGuestProcess(child, o.vmId, o.logFile);
    try {
      const info = await proc.waitReady(o.readyTimeoutMs);
      if (o.detached) {
        child.stdout?.destroy();
        child.unref();
      } else child.stdout?.resume();
      return { process: proc, info };
    } catch (err) {
      await proc.kill();
      throw err;
    }
  }

  private waitReady(timeoutMs: number): Promise<GuestRuntimeInfo> {
    const stdout = this.child.stdout!;
    stdout.setEncoding('utf8');
    return new Promise((resolve, reject) => {
      let partial = '';
      const fail = (reason: string, cause?: unknown) => {
        cleanup();
        reject(new GuestStartError(this.vmId, reason, { stderrTail: this.logTail(), cause }));
      };
      const timer = setTimeout(() => fail(`no ready line within ${timeoutMs} ms`), timeoutMs);
      const onData = (chunk: string) => {
        const lines = (partial + chunk).split('\n');
        partial = lines.pop() ?? '';
        const ready = lines.find((l) => l.startsWith(GUEST_READY_PREFIX));
        if (!ready) return;
        cleanup();
        try {
          resolve(JSON.parse(ready.slice(GUEST_READY_PREFIX.length)) as GuestRuntimeInfo);
        } catch (err) {
          reject(new GuestStartError(this.vmId, 'unreadable ready line', { cause: err }));
        }
      };
      const onExit = (code: number | null, signal: string | null) =>
        fail(signal ? `killed by ${signal} while starting` : `exited ${code} while starting`);
      const onError = (err: Error) => fail(`cannot run ${process.execPath}: ${err.message}`, err);
      const cleanup = () => {
        clearTimeout(timer);
        stdout.off('data', onData);
        this.child.off('exit', onExit);
        this.child.off('error', onError);
      };
      stdout.on('data', onData);
      this.child.once('exit', onExit);
      this.child.once('error', onError);
    });
  }

  /** SIGTERM, then SIGKILL if it has not exited within `timeoutMs`. */
  async stop(timeoutMs = 5000): Promise<GuestExit> {
    if (this.exitInfo) return this.exitInfo;
    if (this.child.pid === undefined) return { code: null, signal: null };
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return exit;
  }

  /** As a crash would: no shutdown at all. */
  async kill(): Promise<GuestExit> {
    if (this.exitInfo) return this.exitInfo;
    if (this.child.pid === undefined) return { code: null, signal: null };
    this.child.kill('SIGKILL');
    return this.exited;
  }
}

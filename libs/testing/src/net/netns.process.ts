import { spawn, type ChildProcess } from 'node:child_process';
import { trackPid, untrackPid } from '../child-process.registry.js';
import { WaitTimeoutError } from '../errors.js';
import { IP_BINARY, ipCommand } from './ip.commands.js';
import { NetCommandError } from './net.errors.js';

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface NetnsSpawnOptions {
  env?: Record<string, string>;
  /** Stdout kept in memory is cut to its last `maxOutputBytes` characters (default 4 MiB). */
  maxOutputBytes?: number;
}

export const DEFAULT_STOP_GRACE_MS = 2_000;
const DEFAULT_MAX_OUTPUT = 4 * 1024 * 1024;
const STDERR_TAIL_CHARS = 8 * 1024;
/** After 'exit', how long to wait for the pipes to close before calling the process finished anyway. */
const PIPE_DRAIN_MS = 1_000;

/**
 * A long-running program started inside a namespace with `ip netns exec`. `ip` execs the program, so `pid` is the
 * program's own pid; it is registered with the child-process registry, so it dies with the test process.
 */
export class NetnsProcess {
  readonly exited: Promise<ProcessExit>;
  private out = '';
  private errTail = '';
  private exit: ProcessExit | undefined;

  private constructor(
    readonly netns: string,
    readonly argv: readonly string[],
    readonly child: ChildProcess,
    readonly pid: number,
    maxOutputBytes: number,
  ) {
    child.stdout?.setEncoding('utf8');
    child.stderr?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      this.out += chunk;
      if (this.out.length > maxOutputBytes) this.out = this.out.slice(-maxOutputBytes);
    });
    child.stderr?.on('data', (chunk: string) => {
      this.errTail = (this.errTail + chunk).slice(-STDERR_TAIL_CHARS);
    });
    this.exited = new Promise((resolve) => {
      let drainTimer: NodeJS.Timeout | undefined;
      const finish = () => {
        clearTimeout(drainTimer);
        resolve(this.exit!);
      };
      child.once('exit', (code, signal) => {
        untrackPid(pid);
        this.exit = { code, signal };
        drainTimer = setTimeout(finish, PIPE_DRAIN_MS);
      });
      child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
        this.exit ??= { code, signal };
        finish();
      });
    });
  }

  static spawn(netns: string, argv: readonly string[], options: NetnsSpawnOptions = {}): NetnsProcess {
    const args = ipCommand.exec(netns, argv);
    const child = spawn(IP_BINARY, args, {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (child.pid === undefined) {
      // The 'error' event follows; swallow it, the throw below says what happened.
      child.once('error', () => undefined);
      throw new NetCommandError([IP_BINARY, ...args], 'spawn failed', '');
    }
    trackPid(child.pid);
    return new NetnsProcess(netns, argv, child, child.pid, options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT);
  }

  get stdout(): string {
    return this.out;
  }

  get stderr(): string {
    return this.errTail;
  }

  /** How the process ended, once it has. */
  get exitStatus(): ProcessExit | undefined {
    return this.exit;
  }

  /**
   * Waits until `check(stdout)` returns something other than undefined/false; fails at the timeout or as soon as the
   * process exits without it.
   */
  async waitForOutput<T>(
    check: (stdout: string) => T | undefined | false,
    options: { what: string; timeoutMs: number },
  ): Promise<T> {
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      const found = check(this.out);
      if (found !== undefined && found !== false) return found;
      if (this.exit) {
        // Output written just before the exit may still be in the pipe: look once more after it closed.
        await this.exited;
        const last = check(this.out);
        if (last !== undefined && last !== false) return last;
        throw new NetCommandError(
          [IP_BINARY, ...ipCommand.exec(this.netns, this.argv)],
          this.exit.code ?? this.exit.signal,
          `exited before ${options.what}. ${this.errTail}`,
        );
      }
      if (Date.now() >= deadline) throw new WaitTimeoutError(options.what, options.timeoutMs);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process has exited. */
  async stop(graceMs = DEFAULT_STOP_GRACE_MS): Promise<ProcessExit> {
    if (this.exit) return this.exited;
    this.signal('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), graceMs)));
    const first = await Promise.race([this.exited, late]);
    clearTimeout(timer);
    if (first !== 'late') return first;
    this.signal('SIGKILL');
    return this.exited;
  }

  private signal(signal: NodeJS.Signals): void {
    try {
      process.kill(this.pid, signal);
    } catch {
      // already gone
    }
  }
}

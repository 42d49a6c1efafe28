import { type ChildProcess, spawn } from 'node:child_process';
import { type WriteStream, createWriteStream } from 'node:fs';
import { lstat, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { ErrorCode } from '@wanmig/protocol';
import { findQemuBinary } from './qemu.binary.js';
import { QemuConfigError, QemuStartError } from './qemu.errors.js';
import { inNetns } from './qemu.network.js';
import { QmpClient } from './qmp.client.js';

export const DEFAULT_QEMU_READY_TIMEOUT_MS = 15_000;
export const DEFAULT_QEMU_STOP_TIMEOUT_MS = 10_000;
/** sun_path is 108 bytes on Linux, NUL included. */
const MAX_UNIX_SOCKET_PATH = 107;
const STDERR_KEEP_CHARS = 16_384;
const QMP_RETRY_MS = 50;
const VM_NAME = /^[\w.-]{1,64}$/;

export interface QemuExit {
  code: number | null;
  signal: string | null;
}

export interface QemuStartOptions {
  /** 1-64 of [A-Za-z0-9_.-]: used in errors, and passed as `-name` unless `args` has one. */
  name: string;
  /** QEMU's arguments; `-qmp unix:<qmpSocket>,server=on,wait=off` is appended. */
  args: string[];
  /** Path of the QMP socket QEMU listens on; a stale file there is removed, a live one refused. */
  qmpSocket: string;
  /** QEMU's stderr is appended here as well as kept (its tail) for errors. */
  logFile?: string;
  /** Bound on QEMU opening its QMP socket and greeting (DEFAULT_QEMU_READY_TIMEOUT_MS). */
  readyTimeoutMs?: number;
  /** The binary (default: findQemuBinary()). */
  qemuBin?: string;
  /** Default bound on each QMP command. */
  qmpCommandTimeoutMs?: number;
  /**
   * Run QEMU inside this network namespace (`ip netns exec`, root only), e.g. for a tap NIC there. Its host-side
   * sockets must then be unix sockets: the namespace has its own loopback.
   */
  netns?: string;
  /**
   * Called with the pid as soon as QEMU is spawned, before it is ready: e.g. to register it for killing should
   * this process die (QEMU outlives its parent otherwise).
   */
  onSpawn?: (pid: number) => void;
}

/** A QEMU this process started, with its QMP connection. */
export class QemuProcess {
  private constructor(
    private readonly child: QemuChild,
    readonly name: string,
    readonly qmpSocket: string,
    readonly qmp: QmpClient,
  ) {}

  get pid(): number {
    return this.child.pid;
  }

  /** Resolves once QEMU has exited and its stderr is read to the end. */
  get exited(): Promise<QemuExit> {
    return this.child.exited;
  }

  /** Undefined while it runs. */
  get exit(): QemuExit | undefined {
    return this.child.exitInfo;
  }

  /** QEMU's last stderr lines. */
  stderrTail(lines = 20): string {
    return this.child.stderrTail(lines);
  }

  /**
   * Spawns QEMU and connects to its QMP socket. Rejects with QemuStartError (with QEMU's last stderr lines) if it
   * cannot be spawned, exits first, or is not ready within `readyTimeoutMs`; QEMU is killed in the last case.
   */
  static async start(o: QemuStartOptions): Promise<QemuProcess> {
    const readyTimeoutMs = o.readyTimeoutMs ?? DEFAULT_QEMU_READY_TIMEOUT_MS;
    await prepareSocketPath(o.name, o.qmpSocket);
    const bin = o.qemuBin ?? (await findQemuBinary()).path;
    const args = [...o.args];
    if (!args.includes('-name')) args.push('-name', o.name);
    args.push(...qmpArgs(o.qmpSocket));
    const command = inNetns(o.netns, bin, args);
    const child = new QemuChild(
      spawn(command.command, command.args, { stdio: ['ignore', 'ignore', 'pipe'] }),
      o.logFile,
    );
    if (child.pid > 0) o.onSpawn?.(child.pid);
    try {
      const qmp = await waitForQmp(child, o, readyTimeoutMs);
      return new QemuProcess(child, o.name, o.qmpSocket, qmp);
    } catch (err) {
      await child.kill('SIGKILL');
      await rm(o.qmpSocket, { force: true });
      throw err;
    }
  }

  /** QMP `quit`; SIGTERM if it has not exited within half of `timeoutMs`; SIGKILL after the other half. */
  async stop(timeoutMs = DEFAULT_QEMU_STOP_TIMEOUT_MS): Promise<QemuExit> {
    if (this.child.exitInfo) return this.child.exitInfo;
    const half = Math.max(1, Math.floor(timeoutMs / 2));
    const deadline = Date.now() + half;
    if (this.qmp.isOpen) {
      // A QmpClosedError here is QEMU quitting before its reply was read; a timeout means it is stuck: escalate.
      await this.qmp.execute('quit', undefined, { timeoutMs: half }).catch(() => undefined);
    }
    let exit = await this.child.waitExit(deadline - Date.now());
    if (!exit) {
      this.child.signal('SIGTERM');
      exit = await this.child.waitExit(half);
    }
    exit ??= await this.child.kill('SIGKILL');
    await this.cleanup();
    return exit;
  }

  /** Sends `signal` (SIGKILL: as a crash would) and waits for the exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<QemuExit> {
    const exit = await this.child.kill(signal);
    await this.cleanup();
    return exit;
  }

  /** QEMU removes its socket when it quits, not when it is killed. */
  private async cleanup(): Promise<void> {
    await this.qmp.close();
    await rm(this.qmpSocket, { force: true });
  }
}

/** The child process, its exit and the tail of its stderr. */
class QemuChild {
  exitInfo: QemuExit | undefined;
  spawnError: Error | undefined;
  readonly exited: Promise<QemuExit>;
  private stderr = '';
  private readonly log: WriteStream | undefined;

  constructor(
    private readonly child: ChildProcess,
    logFile: string | undefined,
  ) {
    this.log = logFile ? createWriteStream(logFile, { flags: 'a' }) : undefined;
    this.log?.on('error', () => undefined); // a log that cannot be written must not take QEMU down
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      this.log?.write(chunk);
      this.stderr = (this.stderr + chunk).slice(-STDERR_KEEP_CHARS);
    });
    child.on('error', (err) => (this.spawnError ??= err));
    this.exited = new Promise((resolve) =>
      child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
        this.exitInfo = { code, signal };
        this.log?.end();
        resolve(this.exitInfo);
      }),
    );
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  stderrTail(lines: number): string {
    return this.stderr.trimEnd().split('\n').slice(-lines).join('\n');
  }

  signal(signal: NodeJS.Signals): void {
    if (!this.exitInfo && this.child.pid !== undefined) this.child.kill(signal);
  }

  async kill(signal: NodeJS.Signals): Promise<QemuExit> {
    this.signal(signal);
    return this.exited;
  }

  /** The exit, or undefined if it has not come within `ms`. */
  async waitExit(ms: number): Promise<QemuExit | undefined> {
    if (this.exitInfo || ms <= 0) return this.exitInfo;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

async function waitForQmp(child: QemuChild, o: QemuStartOptions, readyTimeoutMs: number): Promise<QmpClient> {
  const deadline = Date.now() + readyTimeoutMs;
  let lastError: unknown;
  for (;;) {
    if (child.spawnError) {
      throw new QemuStartError(o.name, `cannot run QEMU: ${child.spawnError.message}`, { cause: child.spawnError });
    }
    const exit = await child.waitExit(0);
    if (exit) {
      const how = exit.signal ? `killed by ${exit.signal}` : `exited ${exit.code}`;
      throw new QemuStartError(o.name, `QEMU ${how} before its QMP socket was up`, {
        stderrTail: child.stderrTail(20),
        exitCode: exit.code,
        signal: exit.signal,
      });
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      throw new QemuStartError(o.name, `QMP at ${o.qmpSocket} not ready within ${readyTimeoutMs} ms`, {
        stderrTail: child.stderrTail(20),
        cause: lastError,
      });
    }
    try {
      return await QmpClient.connect(o.qmpSocket, { timeoutMs: remaining, commandTimeoutMs: o.qmpCommandTimeoutMs });
    } catch (err) {
      // Not there yet (QmpConnectError), or QEMU went away during the greeting: look at it again shortly.
      lastError = err;
      await child.waitExit(Math.min(QMP_RETRY_MS, remaining));
    }
  }
}

/** Refuses a socket path another process answers on; removes a stale one so that a connect can only reach ours. */
async function prepareSocketPath(name: string, path: string): Promise<void> {
  if (!VM_NAME.test(name)) throw new QemuConfigError([`name '${name}' is not 1-64 of [A-Za-z0-9_.-]`]);
  if (Buffer.byteLength(path) > MAX_UNIX_SOCKET_PATH) {
    throw new QemuConfigError([`QMP socket path is longer than ${MAX_UNIX_SOCKET_PATH} bytes: ${path}`]);
  }
  const existing = await lstat(path).catch(() => undefined);
  if (!existing) return;
  if (!existing.isSocket()) throw new QemuConfigError([`${path} exists and is not a socket`], ErrorCode.Conflict);
  if (await answers(path)) {
    throw new QemuConfigError([`another process listens on the QMP socket ${path}`], ErrorCode.Conflict);
  }
  await rm(path, { force: true });
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** A QMP monitor QEMU serves on unix socket `socket`, without waiting for a client to start. */
export function qmpArgs(socket: string): string[] {
  return ['-qmp', `unix:${qemuOpt(socket)},server=on,wait=off`];
}

/** QEMU option values escape a comma by doubling it. */
export function qemuOpt(value: string): string {
  return value.replaceAll(',', ',,');
}

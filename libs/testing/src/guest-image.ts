import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import {
  ensureGuestImage as ensureHypervisorGuestImage,
  GUEST_DISK_COUNTER_FILE,
  GUEST_FAILED_MARKER,
  GUEST_READY_MARKER,
  guestArgs,
  guestCacheDir,
  guestImageAt,
  QEMU_DISK_DEVICE,
  QEMU_DISK_NODE,
  qmpArgs,
  testGuestAppend,
  type EnsureGuestImageOptions,
  type GuestImage,
} from '@wanmig/hypervisor';
import { GUEST_SERVICE_PORT } from '@wanmig/protocol';
import { trackDir, trackPid, untrackDir, untrackPid } from './child-process.registry.js';
import { type ErrorOptionsWithCause } from './errors.js';
import { getFreePort, LOOPBACK_HOST } from './free-port.util.js';
import { sleep } from './wait.util.js';

export {
  DEFAULT_GUEST_BUILD_TIMEOUT_MS,
  DEFAULT_GUEST_CACHE_DIR,
  GUEST_CACHE_ENV,
  GUEST_DISK_CHURN_FILE,
  GUEST_DISK_COUNTER_FILE,
  GUEST_FAILED_MARKER,
  GUEST_READY_MARKER,
  GuestImageError,
  guestCacheDir,
  type EnsureGuestImageOptions,
  type GuestImage,
} from '@wanmig/hypervisor';
/** Port of the guest's counter service, inside the guest. */
export { GUEST_SERVICE_PORT } from '@wanmig/protocol';

/**
 * The test guest under QEMU for tests, benches and demos: bootGuest and the probes of its counter. The image itself
 * (ensureGuestImage, its paths and markers) is libs/hypervisor's, as the orchestrator launches the same guest.
 */

/** Block node of the guest's disk (for blockdev-mirror and friends) and its virtio-blk device id: guestArgs' names. */
export const GUEST_DISK_NODE = QEMU_DISK_NODE;
export const GUEST_DISK_DEVICE = QEMU_DISK_DEVICE;
export const DEFAULT_GUEST_READY_TIMEOUT_MS = 120_000;
export const DEFAULT_GUEST_STOP_TIMEOUT_MS = 5_000;
export const DEFAULT_GUEST_RAM_MIB = 256;
const QEMU_BINARY = 'qemu-system-x86_64';
const QEMU_NAME = 'wanmig-guest';
const READY_POLL_MS = 100;
const LOG_TAIL_BYTES = 3_000;
const MAX_PORT_ATTEMPTS = 3;
const UNIX_PATH_MAX = 107;

const run = promisify(execFile);

/** QEMU did not bring the guest to its ready marker: missing binary, early exit, a FAILED marker or a timeout. */
export class GuestBootError extends Error {
  override readonly name = 'GuestBootError';

  constructor(
    readonly reason: string,
    readonly serialTail: string,
    readonly qemuLogTail: string,
    options?: ErrorOptionsWithCause,
  ) {
    super(
      `guest boot failed: ${reason}` +
        (serialTail ? `\n--- serial console tail ---\n${serialTail}` : '') +
        (qemuLogTail ? `\n--- qemu stderr tail ---\n${qemuLogTail}` : ''),
      options,
    );
  }
}

/** The guest's counter could not be read (service or disk). */
export class GuestProbeError extends Error {
  override readonly name = 'GuestProbeError';

  constructor(
    readonly what: string,
    readonly reason: string,
    options?: ErrorOptionsWithCause,
  ) {
    super(`${what}: ${reason}`, options);
  }
}

/** libs/hypervisor's ensureGuestImage, its build script killed should the test process die before it ends. */
export async function ensureGuestImage(options: EnsureGuestImageOptions = {}): Promise<GuestImage> {
  let pid: number | undefined;
  try {
    return await ensureHypervisorGuestImage({ ...options, onSpawn: (spawned) => trackPid((pid = spawned)) });
  } finally {
    if (pid !== undefined) untrackPid(pid);
  }
}

export interface BootGuestOptions {
  /** Disk to boot, usually `GuestImage.disk`. */
  disk: string;
  /** 'copy' (default): boot a sparse copy in workDir, so the original stays as it is. 'in-place': boot `disk`. */
  diskMode?: 'copy' | 'in-place';
  /**
   * Default 'tcg': on this machine a KVM guest never leaves the firmware (GROUND.md). The CPU model is QEMU's
   * default under both, which migrates between hosts (`-cpu host` does not, and aborts here under KVM on an MSR).
   */
  accel?: 'tcg' | 'kvm';
  machine?: 'q35' | 'pc';
  ramMiB?: number;
  /** Kernel and initramfs; default the ones in guestCacheDir(). */
  kernel?: string;
  initrd?: string;
  /** Serial console log; default `<workDir>/serial.log`. */
  serialLog?: string;
  /** Host port forwarded (127.0.0.1 only) to the guest's 7777; default a free port. */
  servicePort?: number;
  /** QMP unix socket (server, no wait) when given. */
  qmpSocket?: string;
  /** Size of the guest's hot set in MiB (default 32; 0 = none) and KiB written to its disk per second (256). */
  hotMiB?: number;
  diskKiB?: number;
  /** Appended to QEMU's command line, e.g. ['-incoming', 'defer'] (then also set waitForReady: false). */
  extraArgs?: string[];
  waitForReady?: boolean;
  readyTimeoutMs?: number;
  stopTimeoutMs?: number;
  /** Directory for the disk copy and logs; default a new temp dir, removed by stop() (unless keepWorkDir). */
  workDir?: string;
  keepWorkDir?: boolean;
}

export interface GuestHandle {
  readonly pid: number;
  /** The disk QEMU runs on (the copy, in 'copy' mode). */
  readonly disk: string;
  readonly serialLog: string;
  readonly qemuLog: string;
  readonly servicePort: number;
  readonly qmpSocket?: string;
  readonly workDir: string;
  readonly running: boolean;
  /** Wall time from spawn to the ready marker (undefined when not waited for). */
  readonly readyAfterMs?: number;
  /** The full serial console output so far. */
  serialText(): string;
  /** SIGTERM, SIGKILL after stopTimeoutMs, then remove workDir (when bootGuest made it). Idempotent. */
  stop(): Promise<void>;
}

/** Boots the guest under QEMU and (by default) waits for its ready marker on the serial console. */
export async function bootGuest(options: BootGuestOptions): Promise<GuestHandle> {
  const cacheDir = guestCacheDir();
  const source = resolve(options.disk);
  const mode = options.diskMode ?? 'copy';
  if (mode === 'in-place' && !relative(cacheDir, source).startsWith('..')) {
    throw new GuestBootError(`refusing to boot ${source} in place: it belongs to the pristine cache`, '', '');
  }
  if (options.qmpSocket && options.qmpSocket.length > UNIX_PATH_MAX) {
    throw new GuestBootError(`QMP socket path longer than ${UNIX_PATH_MAX} bytes: ${options.qmpSocket}`, '', '');
  }
  const ownDir = options.workDir === undefined;
  const workDir = options.workDir ?? (await mkdtemp(join(tmpdir(), 'wanmig-guest-')));
  if (ownDir) trackDir(workDir);
  const guest = new QemuGuest(options, workDir, ownDir, cacheDir);
  try {
    if (mode === 'copy') await run('cp', ['--sparse=always', source, guest.disk], { timeout: 120_000 });
    for (let attempt = 1; ; attempt++) {
      const port = options.servicePort ?? (await getFreePort());
      try {
        await guest.start(port);
        return guest;
      } catch (err) {
        // Another process may have taken the port between probing and QEMU binding it: retry with a fresh one.
        const portRace = err instanceof GuestBootError && /host forwarding/i.test(err.qemuLogTail);
        if (!portRace || options.servicePort !== undefined || attempt >= MAX_PORT_ATTEMPTS) throw err;
      }
    }
  } catch (err) {
    await guest.stop();
    throw err;
  }
}

class QemuGuest implements GuestHandle {
  readonly disk: string;
  readonly serialLog: string;
  readonly qemuLog: string;
  readonly qmpSocket?: string;
  servicePort = 0;
  readyAfterMs?: number;
  private child?: ChildProcess;
  private exited?: Promise<void>;
  private stopping?: Promise<void>;

  constructor(
    private readonly options: BootGuestOptions,
    readonly workDir: string,
    private readonly ownDir: boolean,
    private readonly cacheDir: string,
  ) {
    this.disk = (options.diskMode ?? 'copy') === 'copy' ? join(workDir, 'disk.img') : resolve(options.disk);
    this.serialLog = options.serialLog ?? join(workDir, 'serial.log');
    this.qemuLog = join(workDir, 'qemu.log');
    this.qmpSocket = options.qmpSocket;
  }

  get pid(): number {
    return this.child?.pid ?? -1;
  }
  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(port: number): Promise<void> {
    this.servicePort = port;
    await rm(this.serialLog, { force: true });
    if (this.qmpSocket) await rm(this.qmpSocket, { force: true });
    const logFd = openSync(this.qemuLog, 'w');
    let child: ChildProcess;
    try {
      child = spawn(QEMU_BINARY, this.args(), { stdio: ['ignore', logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    this.child = child;
    const spawnFailure = new Promise<never>((_, reject) => {
      child.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          err.code === 'ENOENT'
            ? new GuestBootError(`${QEMU_BINARY} not found: run \`bash deploy/bootstrap.sh\``, '', '', { cause: err })
            : err,
        ),
      );
    });
    spawnFailure.catch(() => undefined);
    this.exited = new Promise((resolveExit) => {
      child.once('exit', () => resolveExit());
      child.once('error', () => child.pid === undefined && resolveExit());
    });
    if (child.pid !== undefined) trackPid(child.pid);
    const startedAt = Date.now();
    try {
      if (this.options.waitForReady === false) {
        await Promise.race([sleep(READY_POLL_MS), spawnFailure]);
        if (!this.running) throw this.bootError('qemu exited at once');
        return;
      }
      await Promise.race([this.waitReady(), spawnFailure]);
      this.readyAfterMs = Date.now() - startedAt;
    } catch (err) {
      await this.stopProcess();
      throw err;
    }
  }

  /** The machine guestArgs builds (the one a migration's destination is started with), then QMP and extraArgs. */
  private args(): string[] {
    const o = this.options;
    const image = guestImageAt(this.cacheDir);
    const machine = guestArgs(
      {
        kernel: o.kernel ?? image.kernel,
        initrd: o.initrd ?? image.initrd,
        append: testGuestAppend({ hotMiB: o.hotMiB, diskKiB: o.diskKiB }),
        machine: o.machine,
        accel: o.accel,
        ramMiB: o.ramMiB ?? DEFAULT_GUEST_RAM_MIB,
        diskPath: this.disk,
        guestPort: GUEST_SERVICE_PORT,
      },
      this.serialLog,
      this.servicePort,
    );
    return ['-name', QEMU_NAME, ...machine, ...(this.qmpSocket ? qmpArgs(this.qmpSocket) : []), ...(o.extraArgs ?? [])];
  }

  private async waitReady(): Promise<void> {
    const timeoutMs = this.options.readyTimeoutMs ?? DEFAULT_GUEST_READY_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const serial = this.serialText();
      if (serial.includes(GUEST_READY_MARKER)) return;
      const failed = serial.split('\n').find((line) => line.includes(GUEST_FAILED_MARKER));
      if (failed) throw this.bootError(failed.trim());
      if (!this.running) {
        const code = this.child?.exitCode ?? null;
        const how = code !== null ? `code ${code}` : `signal ${this.child?.signalCode}`;
        throw this.bootError(`qemu exited with ${how} before the ready marker`);
      }
      if (Date.now() > deadline) throw this.bootError(`no "${GUEST_READY_MARKER}" after ${timeoutMs} ms`);
      await sleep(READY_POLL_MS);
    }
  }

  private bootError(reason: string): GuestBootError {
    return new GuestBootError(reason, fileTail(this.serialLog), fileTail(this.qemuLog));
  }

  serialText(): string {
    try {
      return readFileSync(this.serialLog, 'utf8');
    } catch {
      return '';
    }
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.stopProcess();
      if (this.ownDir && !this.options.keepWorkDir) {
        await rm(this.workDir, { recursive: true, force: true });
        untrackDir(this.workDir);
      }
    })();
    return this.stopping;
  }

  private async stopProcess(): Promise<void> {
    const child = this.child;
    if (!child || !this.exited) return;
    if (this.running) {
      child.kill('SIGTERM');
      const timeoutMs = this.options.stopTimeoutMs ?? DEFAULT_GUEST_STOP_TIMEOUT_MS;
      const timer = new AbortController();
      const timedOut = await Promise.race([
        this.exited.then(() => false),
        sleep(timeoutMs, true, { signal: timer.signal }).catch(() => false),
      ]);
      timer.abort();
      if (timedOut) child.kill('SIGKILL');
    }
    await this.exited;
    if (child.pid !== undefined) untrackPid(child.pid);
  }
}

function fileTail(path: string, maxBytes = LOG_TAIL_BYTES): string {
  try {
    const size = statSync(path).size;
    const length = Math.min(size, maxBytes);
    const buffer = Buffer.alloc(length);
    const fd = openSync(path, 'r');
    try {
      readSync(fd, buffer, 0, length, size - length);
    } finally {
      closeSync(fd);
    }
    return buffer.toString('utf8').trimEnd();
  } catch {
    return '';
  }
}

/** `COUNTER <n>` → n. */
export function parseGuestCounter(text: string): number | undefined {
  const match = /COUNTER (\d+)/.exec(text);
  return match ? Number(match[1]) : undefined;
}

/** Asks the guest's service (through the forwarded port) for its in-memory counter. */
export function queryGuestCounter(port: number, host = LOOPBACK_HOST, timeoutMs = 5_000): Promise<number> {
  const what = `guest counter at ${host}:${port}`;
  return new Promise((resolveCounter, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(port, host);
    socket.setTimeout(timeoutMs, () => socket.destroy(new GuestProbeError(what, `no answer in ${timeoutMs} ms`)));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('error', (err) =>
      reject(err instanceof GuestProbeError ? err : new GuestProbeError(what, err.message, { cause: err })),
    );
    socket.once('close', (hadError) => {
      if (hadError) return;
      const text = Buffer.concat(chunks).toString('utf8');
      const counter = parseGuestCounter(text);
      if (counter === undefined) reject(new GuestProbeError(what, `unexpected reply ${JSON.stringify(text)}`));
      else resolveCounter(counter);
    });
  });
}

/**
 * Reads a file from an ext4 image with debugfs (e2fsprogs), without mounting it; safe on a running guest's disk
 * for data the guest fsync'ed in place (debugfs does not replay the journal).
 */
export async function readGuestDiskFile(disk: string, path: string): Promise<Buffer> {
  const { stdout, stderr } = await run('debugfs', ['-R', `cat ${path}`, disk], {
    encoding: 'buffer',
    timeout: 30_000,
    maxBuffer: 256 * 1024 * 1024,
  });
  const message = stderr.toString('utf8');
  if (/not found|cannot|bad magic/i.test(message)) {
    throw new GuestProbeError(`${path} in ${disk}`, message.trim().split('\n').pop() ?? 'debugfs failed');
  }
  return stdout;
}

/** The counter the guest last fsync'ed to its disk. */
export async function readGuestDiskCounter(disk: string): Promise<number> {
  const text = (await readGuestDiskFile(disk, GUEST_DISK_COUNTER_FILE)).toString('utf8');
  const counter = parseGuestCounter(text);
  if (counter === undefined)
    throw new GuestProbeError(`${GUEST_DISK_COUNTER_FILE} in ${disk}`, `unexpected ${JSON.stringify(text)}`);
  return counter;
}

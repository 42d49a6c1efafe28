import { constants } from 'node:fs';
import { access, mkdir, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ErrorCode, GUEST_SERVICE_PORT } from '@wanmig/protocol';
import { DEFAULT_QEMU_APPEND } from './kernel.append.js';
import { QemuConfigError, QemuStartError } from './qemu.errors.js';
import { nicArgs, tapNetworkProblems, type QemuTapNetwork } from './qemu.network.js';
import { qemuOpt, QemuProcess, type QemuExit, type QemuStartOptions } from './qemu.process.js';
import { Accelerator } from './marker.boot.js';
import type { QmpClient } from './qmp.client.js';
import { QmpCommandError } from './qmp.errors.js';
import type { QmpStatus } from './qmp.types.js';

/** Machine types the driver starts (the source must run the same one). */
export const QemuMachine = { Q35: 'q35', Pc: 'pc' } as const;
export type QemuMachine = (typeof QemuMachine)[keyof typeof QemuMachine];

/** Block node of the guest's disk (the node the source mirrors) and its virtio-blk device id. */
export const QEMU_DISK_NODE = 'disk0';
export const QEMU_DISK_DEVICE = 'vda';
/** The guest port the user-mode NIC forwards to, unless the spec says otherwise (the test guest's counter service). */
export const DEFAULT_QEMU_GUEST_PORT = GUEST_SERVICE_PORT;
export const DEFAULT_QEMU_MIN_RAM_MIB = 16;
/** QEMU 7.2's `announce-self` arguments: `rounds` announcements, `initial` ms apart, growing by `step` up to `max`. */
export interface QemuAnnounce {
  initial: number;
  max: number;
  rounds: number;
  step: number;
}
/** `announce-self` after `cont`: a few gratuitous ARP/RARP rounds so switches learn where the guest now is. */
export const DEFAULT_ANNOUNCE: Readonly<QemuAnnounce> = { initial: 50, max: 550, rounds: 5, step: 100 };
/** Run state `status()` reports once QEMU has exited (QMP's own states never use it). */
export const QEMU_EXITED = 'exited';
/** sun_path is 108 bytes on Linux, NUL included. */
const MAX_UNIX_SOCKET_PATH = 107;
const LOOPBACK = '127.0.0.1';
const MAX_PORT_ATTEMPTS = 3;
const NAME = /^[\w.-]{1,64}$/;
/** The chardev of the second QMP monitor, the observers' (monitorArgs). */
const MONITOR_CHARDEV = 'monitor1';

/**
 * How the guest is launched: the knobs that must be the same at both ends of a migration (QEMU migrates RAM and
 * device state, not the machine's shape), so that the destination is started as the source was.
 */
export interface QemuGuestSpec {
  kernel: string;
  initrd: string;
  /** Kernel command line (DEFAULT_QEMU_APPEND). */
  append?: string;
  machine?: QemuMachine;
  /** The accelerator the source runs under (tcg by default): the caller chose it there (probeAccelerator). */
  accel?: Accelerator;
  /** vCPUs (1). */
  cpus?: number;
}

/** The guest's machine as QEMU's command line gives it (guestArgs): the same at both ends of a migration. */
export interface QemuGuestLaunch extends QemuGuestSpec {
  /** The raw disk image QEMU opens in place (the image the migration's disk path filled). */
  diskPath: string;
  ramMiB: number;
  /** The guest port the user-mode NIC forwards to (DEFAULT_QEMU_GUEST_PORT); unused with `network`. */
  guestPort?: number;
  /**
   * The NIC on a tap in a network namespace, QEMU running inside it (see QemuTapNetwork). Absent: user-mode
   * networking with `servicePort` forwarded, as before.
   */
  network?: QemuTapNetwork;
}

export interface QemuIncomingSpec extends QemuGuestLaunch {
  /** QEMU's `-name`: 1-64 of [A-Za-z0-9_.-]. */
  name: string;
  /** Created if missing: QMP, monitor and incoming sockets, serial console and QEMU's stderr log. */
  runDir: string;
  /**
   * Post-copy may come: capability `postcopy-ram` on before the stream starts (the source needs it too, and the
   * destination's return path must reach the source). Rejects with QemuConfigError (UNAVAILABLE) where the host
   * cannot (no userfaultfd). Default off.
   */
  postcopy?: boolean;
  /** Host port (127.0.0.1) forwarded to the guest's `guestPort`; absent or 0: a free one. None with `network`. */
  servicePort?: number;
  /** Bound on QEMU opening its QMP socket. */
  readyTimeoutMs?: number;
  /** stop(): QMP `quit`, then SIGTERM, then SIGKILL within this (QemuProcess's default). */
  stopTimeoutMs?: number;
  onSpawn?: (pid: number) => void;
}

/** What the driver needs of a started QEMU (QemuProcess; tests pass a fake). */
export interface QemuProcessHandle {
  readonly pid: number;
  readonly qmp: QmpClient;
  readonly exit: QemuExit | undefined;
  readonly exited: Promise<QemuExit>;
  stop(timeoutMs?: number): Promise<QemuExit>;
  stderrTail(lines?: number): string;
}

export interface QemuDriverOptions {
  /** The QEMU binary (default: findQemuBinary(), through QemuProcess). */
  qemuBin?: string;
  /** Starts QEMU (default QemuProcess.start): the seam unit tests use. */
  start?: (options: QemuStartOptions) => Promise<QemuProcessHandle>;
}

export interface QemuResumeResult {
  /** QEMU's run state after `cont` (`running`). */
  status: string;
  /** Steps after `cont` that failed without failing the resume (announce-self). */
  warnings: string[];
}

/**
 * The `qemu` hypervisor at a destination host: starts the guest's QEMU to receive a migration (`-incoming
 * unix:<socket> -S`) on a disk image in place, then runs it once it has loaded the stream.
 *
 * Not a HypervisorDriver: that interface moves memory page by page with a dirty log and resumes from a device-state
 * blob (the sim driver's way); QEMU's memory and device state arrive as one opaque stream on the incoming socket, so
 * there is nothing to hand `resume()`.
 */
export class QemuDriver {
  readonly name = 'qemu';

  constructor(private readonly options: QemuDriverOptions = {}) {}

  /**
   * Launches QEMU paused in `inmigrate`, waiting on `incomingSocket` for a migration stream, with migration events
   * (and `postcopy-ram` when asked) on, and a second QMP monitor on `monitorSocket` for observers. Rejects with
   * QemuConfigError (INVALID_REQUEST: unreadable kernel, missing disk, bad sizes...; UNAVAILABLE: no post-copy on
   * this host) or QemuStartError (QEMU would not start); nothing keeps running then.
   */
  async startIncoming(spec: QemuIncomingSpec): Promise<QemuIncomingVm> {
    await checkSpec(spec);
    await mkdir(spec.runDir, { recursive: true });
    const paths = incomingPaths(spec.runDir);
    await rm(paths.incomingSocket, { force: true });
    await rm(paths.monitorSocket, { force: true });
    const start = this.options.start ?? ((o: QemuStartOptions) => QemuProcess.start(o));
    for (let attempt = 1; ; attempt++) {
      // On a tap the guest is reached at its own address: no port to forward (0 says so).
      const servicePort = spec.network ? 0 : spec.servicePort || (await freeLoopbackPort());
      let qemu: QemuProcessHandle;
      try {
        qemu = await start({
          name: spec.name,
          args: incomingArgs(spec, paths, servicePort),
          qmpSocket: paths.qmpSocket,
          logFile: paths.qemuLog,
          readyTimeoutMs: spec.readyTimeoutMs,
          qemuBin: this.options.qemuBin,
          onSpawn: spec.onSpawn,
          netns: spec.network?.netns,
        });
      } catch (err) {
        // Another process may have taken the port between probing and QEMU binding it: again with a fresh one.
        const portRace = err instanceof QemuStartError && /host forwarding/i.test(err.stderrTail);
        if (!portRace || spec.servicePort || spec.network || attempt >= MAX_PORT_ATTEMPTS) throw err;
        continue;
      }
      const vm = new QemuIncomingVm(qemu, paths, servicePort, spec.stopTimeoutMs);
      try {
        await qemu.qmp.execute('migrate-set-capabilities', {
          capabilities: [
            { capability: 'events', state: true },
            ...(spec.postcopy ? [{ capability: 'postcopy-ram', state: true }] : []),
          ],
        });
      } catch (err) {
        await vm.stop();
        if (!spec.postcopy || !(err instanceof QmpCommandError)) throw err;
        // QEMU checks userfaultfd when the capability is set at the destination: a host matter, not the request's.
        throw new QemuConfigError([`post-copy is not available on this host: ${err.desc}`], ErrorCode.Unavailable);
      }
      return vm;
    }
  }
}

export interface QemuIncomingPaths {
  /** delta-apply's (the driver's) QMP connection. */
  qmpSocket: string;
  /** A second QMP monitor, for observers on this host (tools, tests): QEMU serves each monitor on its own. */
  monitorSocket: string;
  incomingSocket: string;
  serialLog: string;
  qemuLog: string;
}

/** A destination QEMU started by QemuDriver.startIncoming. */
export class QemuIncomingVm {
  private stopping?: Promise<QemuExit>;

  constructor(
    private readonly qemu: QemuProcessHandle,
    readonly paths: QemuIncomingPaths,
    /** Host port forwarded to the guest's service port; 0 for a guest on a tap (reached at its own address). */
    readonly servicePort: number,
    private readonly stopTimeoutMs?: number,
  ) {}

  get pid(): number {
    return this.qemu.pid;
  }

  get qmp(): QmpClient {
    return this.qemu.qmp;
  }

  /** Where the migration stream goes (`-incoming unix:<incomingSocket>`). */
  get incomingSocket(): string {
    return this.paths.incomingSocket;
  }

  /** The second QMP monitor, free for an observer (the driver's own connection is `qmp`). */
  get monitorSocket(): string {
    return this.paths.monitorSocket;
  }

  /** QEMU's exit, once it has exited. */
  get exit(): QemuExit | undefined {
    return this.qemu.exit;
  }

  get exited(): Promise<QemuExit> {
    return this.qemu.exited;
  }

  /** QEMU's last stderr lines. */
  stderrTail(lines = 20): string {
    return this.qemu.stderrTail(lines);
  }

  /**
   * `query-status`: `inmigrate` while the stream loads, `paused` once loaded (-S), `running` after resume();
   * QEMU_EXITED once QEMU is gone.
   */
  async status(): Promise<QmpStatus> {
    if (this.qemu.exit || this.stopping) return { status: QEMU_EXITED, running: false };
    try {
      return await this.qemu.qmp.execute<QmpStatus>('query-status');
    } catch (err) {
      if (this.qemu.exit || !this.qemu.qmp.isOpen) return { status: QEMU_EXITED, running: false };
      throw err;
    }
  }

  /**
   * Runs the guest: `cont`, then `announce-self` (gratuitous ARP/RARP rounds for the NICs). A failed `cont` rejects;
   * a failed announce is only a warning: the guest runs either way.
   */
  async resume(announce: QemuAnnounce | false = DEFAULT_ANNOUNCE): Promise<QemuResumeResult> {
    await this.qemu.qmp.execute('cont');
    const warnings: string[] = [];
    if (announce && announce.rounds > 0) {
      try {
        await this.qemu.qmp.execute('announce-self', { ...announce });
      } catch (err) {
        warnings.push(`announce-self: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    const { status } = await this.status();
    return { status, warnings };
  }

  /** Stops QEMU (QMP quit, then signals) and waits for its exit; removes its sockets. Idempotent. */
  stop(): Promise<QemuExit> {
    this.stopping ??= (async () => {
      const exit = await this.qemu.stop(this.stopTimeoutMs);
      await rm(this.paths.incomingSocket, { force: true });
      await rm(this.paths.monitorSocket, { force: true });
      return exit;
    })();
    return this.stopping;
  }
}

export function incomingPaths(runDir: string): QemuIncomingPaths {
  return {
    qmpSocket: join(runDir, 'qmp.sock'),
    monitorSocket: join(runDir, 'monitor.qmp'),
    incomingSocket: join(runDir, 'incoming.sock'),
    serialLog: join(runDir, 'serial.log'),
    qemuLog: join(runDir, 'qemu.log'),
  };
}

/**
 * QEMU's command line for the guest's machine, the one builder of it: kernel and initrd, one virtio-blk disk on node
 * `disk0` over a raw `file` node with O_DIRECT, one virtio-net NIC (user-mode with one forwarded port, or a tap:
 * nicArgs), the serial console to a file. A source started with these arguments (and no `-incoming`) migrates to a
 * destination started by startIncoming. The caller adds what is not the machine: `-name`, monitors, `-incoming`.
 */
export function guestArgs(spec: QemuGuestLaunch, serialLog: string, servicePort: number): string[] {
  const file = {
    driver: 'file',
    filename: spec.diskPath,
    'node-name': `${QEMU_DISK_NODE}-file`,
    cache: { direct: true },
  };
  const raw = { driver: 'raw', file: `${QEMU_DISK_NODE}-file`, 'node-name': QEMU_DISK_NODE };
  const guestPort = spec.guestPort ?? DEFAULT_QEMU_GUEST_PORT;
  return [
    ...['-machine', spec.machine ?? QemuMachine.Q35, '-accel', spec.accel ?? Accelerator.Tcg],
    ...['-m', String(spec.ramMiB), '-smp', String(spec.cpus ?? 1)],
    ...['-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot'],
    ...['-kernel', spec.kernel, '-initrd', spec.initrd, '-append', spec.append ?? DEFAULT_QEMU_APPEND],
    ...['-chardev', `file,id=serial0,path=${qemuOpt(serialLog)}`, '-serial', 'chardev:serial0'],
    ...['-blockdev', JSON.stringify(file), '-blockdev', JSON.stringify(raw)],
    ...['-device', `virtio-blk-pci,drive=${QEMU_DISK_NODE},id=${QEMU_DISK_DEVICE}`],
    ...nicArgs(spec.network ? { network: spec.network } : { servicePort, guestPort }),
  ];
}

/** A second QMP monitor, for observers, on unix socket `socket` (QEMU serves each monitor on its own). */
export function monitorArgs(socket: string): string[] {
  return [
    ...['-chardev', `socket,id=${MONITOR_CHARDEV},path=${qemuOpt(socket)},server=on,wait=off`],
    ...['-mon', `chardev=${MONITOR_CHARDEV},mode=control`],
  ];
}

/** The destination's command line: the guest's machine, a second QMP monitor for observers, `-incoming ... -S`. */
export function incomingArgs(spec: QemuIncomingSpec, paths: QemuIncomingPaths, servicePort: number): string[] {
  return [
    ...guestArgs(spec, paths.serialLog, servicePort),
    ...monitorArgs(paths.monitorSocket),
    ...['-incoming', `unix:${qemuOpt(paths.incomingSocket)}`, '-S'],
  ];
}

async function checkSpec(spec: QemuIncomingSpec): Promise<void> {
  const problems: string[] = [];
  if (!NAME.test(spec.name)) problems.push(`name '${spec.name}' is not 1-64 of [A-Za-z0-9_.-]`);
  if (!Number.isSafeInteger(spec.ramMiB) || spec.ramMiB < DEFAULT_QEMU_MIN_RAM_MIB) {
    problems.push(`ramMiB must be an integer ≥ ${DEFAULT_QEMU_MIN_RAM_MIB}, got ${spec.ramMiB}`);
  }
  if (spec.cpus !== undefined && (!Number.isSafeInteger(spec.cpus) || spec.cpus < 1)) {
    problems.push(`cpus must be a positive integer, got ${spec.cpus}`);
  }
  if (spec.machine !== undefined && !Object.values(QemuMachine).includes(spec.machine)) {
    problems.push(`machine must be one of ${Object.values(QemuMachine).join(', ')}`);
  }
  if (spec.accel !== undefined && !Object.values(Accelerator).includes(spec.accel)) {
    problems.push(`accel must be one of ${Object.values(Accelerator).join(', ')}`);
  }
  for (const port of [spec.servicePort, spec.guestPort]) {
    if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
      problems.push(`port ${port} is not in [0, 65535]`);
    }
  }
  problems.push(...(await bootProblems(spec)));
  if (spec.network) problems.push(...tapNetworkProblems(spec.network));
  const disk = await stat(spec.diskPath).catch(() => undefined);
  if (!disk?.isFile()) problems.push(`disk ${spec.diskPath} is not a file`);
  else
    await access(spec.diskPath, constants.R_OK | constants.W_OK).catch(() =>
      problems.push(`disk ${spec.diskPath} is not writable`),
    );
  const longest = incomingPaths(spec.runDir).incomingSocket;
  if (Buffer.byteLength(longest) > MAX_UNIX_SOCKET_PATH) {
    problems.push(`runDir is too long for a unix socket path: ${longest} is over ${MAX_UNIX_SOCKET_PATH} bytes`);
  }
  if (problems.length > 0) throw new QemuConfigError(problems);
}

/** What is wrong with a guest's boot: its kernel command line, and kernel and initrd that must be readable here. */
export async function bootProblems(boot: { kernel: string; initrd: string; append?: string }): Promise<string[]> {
  const problems: string[] = [];
  // The kernel echoes control characters verbatim and QEMU splits nothing: only printable text on the line.
  if (boot.append !== undefined && !/^[\x20-\x7e]*$/.test(boot.append)) problems.push('append must be printable ASCII');
  for (const [what, path] of [
    ['kernel', boot.kernel],
    ['initrd', boot.initrd],
  ] as const) {
    await access(path, constants.R_OK).catch(() => problems.push(`${what} ${path} is not readable`));
  }
  return problems;
}

/** A TCP port free on 127.0.0.1 a moment ago (startIncoming retries if QEMU loses the race for it). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, LOOPBACK, () => {
      const address = server.address();
      const port = address !== null && typeof address === 'object' ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port from the kernel'))));
    });
  });
}

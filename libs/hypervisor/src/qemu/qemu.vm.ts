/**
 * QEMU VMs a site runs, by VM id, under the site's runtime dir: `<runtimeDir>/qemu-vms/<vmId>/` holds the VM's
 * launch spec (`spec.json`: the machine a destination must start), its pid file, and `qmp.sock`, the QMP monitor
 * every wanmig service of the site reaches it by. A VM wanmig launched has its sockets there; a VM that arrived by
 * migration (delta-apply's destination QEMU) or was adopted has `qmp.sock` as a link to its monitor. So no request
 * names a host path: services find a VM's monitor from its id.
 *
 * QEMU serves one client per monitor at a time (a second one waits for the first to leave): every use here is a
 * short connection, except the memory engine's, which holds one for the length of a migration.
 */
import { spawn } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, WanmigError } from '@wanmig/protocol';
import { HypervisorError } from '../errors.js';
import { Accelerator } from './marker.boot.js';
import { findQemuBinary } from './qemu.binary.js';
import { QemuConfigError, QemuStartError } from './qemu.errors.js';
import { DEFAULT_QEMU_APPEND } from './kernel.append.js';
import {
  bootProblems,
  DEFAULT_QEMU_GUEST_PORT,
  freeLoopbackPort,
  guestArgs,
  monitorArgs,
  QEMU_DISK_NODE,
  QemuMachine,
} from './qemu.driver.js';
import { qmpArgs } from './qemu.process.js';
import { QmpClient } from './qmp.client.js';
import type { QmpStatus } from './qmp.types.js';

/** Sub-directory of a site's runtime dir holding its QEMU VMs, one dir per VM id. */
export const QEMU_VM_SUBDIR = 'qemu-vms';
const NAME = /^[\w.-]{1,64}$/;
const MAX_UNIX_SOCKET_PATH = 107;
/** How long a launched guest may take to print its ready marker (a TCG boot on a loaded host is slow). */
export const DEFAULT_QEMU_BOOT_TIMEOUT_MS = 180_000;
const QMP_CONNECT_TIMEOUT_MS = 10_000;
const BOOT_POLL_MS = 200;

/**
 * The machine a QEMU VM runs: what the destination of a migration must start to receive it (QEMU migrates RAM and
 * device state, not the machine's shape). Kept as `spec.json` beside the VM's monitor.
 */
export interface QemuVmSpec {
  vmId: string;
  kernel: string;
  initrd: string;
  append: string;
  machine: QemuMachine;
  accel: Accelerator;
  ramMiB: number;
  cpus: number;
  /** The raw image QEMU opens in place, node `disk0` (the node a migration mirrors). */
  diskPath: string;
  diskNode: string;
  /** User-mode NIC: this host port (127.0.0.1) is forwarded to `guestPort` in the guest. */
  servicePort: number;
  guestPort: number;
}

export interface QemuLaunchSpec {
  vmId: string;
  kernel: string;
  initrd: string;
  append?: string;
  machine?: QemuMachine;
  accel?: Accelerator;
  ramMiB: number;
  cpus?: number;
  diskPath: string;
  guestPort?: number;
  /** Host port to forward (0 or absent: a free one). */
  servicePort?: number;
  /** A line the guest prints on its serial console once its service is up: launch waits for it. */
  readyMarker?: string;
  bootTimeoutMs?: number;
}

export interface QemuVmPaths {
  dir: string;
  spec: string;
  /** The VM's QMP monitor (a socket for a launched VM, a link to one otherwise). */
  qmpSocket: string;
  /** A second monitor, for observers (tests, tools): launched VMs only. */
  monitorSocket: string;
  pidFile: string;
  serialLog: string;
  qemuLog: string;
}

export function qemuVmPaths(runtimeDir: string, vmId: string): QemuVmPaths {
  const dir = join(runtimeDir, QEMU_VM_SUBDIR, vmId);
  return {
    dir,
    spec: join(dir, 'spec.json'),
    qmpSocket: join(dir, 'qmp.sock'),
    monitorSocket: join(dir, 'monitor.sock'),
    pidFile: join(dir, 'qemu.pid'),
    serialLog: join(dir, 'serial.log'),
    qemuLog: join(dir, 'qemu.log'),
  };
}

/** No QEMU VM with this id at this site. */
export class QemuVmNotFoundError extends HypervisorError {
  constructor(vmId: string, runtimeDir: string) {
    super(ErrorCode.NotFound, `no QEMU VM '${vmId}' under ${runtimeDir}`, { vmId });
    this.name = 'QemuVmNotFoundError';
  }
}

/**
 * Starts a QEMU VM from a spec, detached (`-daemonize`: the VM outlives the service that launched it, as a VM
 * outlives libvirtd), and waits for its ready marker when given. Rejects with QemuConfigError (INVALID_REQUEST:
 * files that do not exist, bad sizes; CONFLICT: the id is taken) or QemuStartError; nothing is left running then.
 */
export async function launchQemuVm(runtimeDir: string, launch: QemuLaunchSpec): Promise<QemuVmSpec> {
  await checkLaunch(runtimeDir, launch);
  const paths = qemuVmPaths(runtimeDir, launch.vmId);
  if (await qemuVmExists(runtimeDir, launch.vmId)) {
    throw new QemuConfigError([`a QEMU VM '${launch.vmId}' already runs at this site`], ErrorCode.Conflict);
  }
  await rm(paths.dir, { recursive: true, force: true });
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  const spec: QemuVmSpec = {
    vmId: launch.vmId,
    kernel: launch.kernel,
    initrd: launch.initrd,
    append: launch.append ?? DEFAULT_QEMU_APPEND,
    machine: launch.machine ?? QemuMachine.Q35,
    accel: launch.accel ?? Accelerator.Tcg,
    ramMiB: launch.ramMiB,
    cpus: launch.cpus ?? 1,
    diskPath: launch.diskPath,
    diskNode: QEMU_DISK_NODE,
    servicePort: launch.servicePort || (await freeLoopbackPort()),
    guestPort: launch.guestPort ?? DEFAULT_QEMU_GUEST_PORT,
  };
  const bin = (await findQemuBinary()).path;
  const args = [
    ...guestArgs(spec, paths.serialLog, spec.servicePort),
    ...['-name', spec.vmId],
    ...qmpArgs(paths.qmpSocket),
    ...monitorArgs(paths.monitorSocket),
    ...['-pidfile', paths.pidFile, '-daemonize'],
  ];
  // With -daemonize the first process exits once the VM is set up: its code says whether it started.
  const started = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-8192)));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stderr }));
  });
  await writeFile(paths.qemuLog, started.stderr);
  if (started.code !== 0) {
    await rm(paths.dir, { recursive: true, force: true });
    throw new QemuStartError(spec.vmId, `QEMU exited ${started.code}`, { stderrTail: started.stderr });
  }
  await writeFile(paths.spec, JSON.stringify(spec, null, 2));
  try {
    if (launch.readyMarker) {
      const pid = await qemuVmPid(runtimeDir, spec.vmId);
      await waitForMarker(paths, pid, launch.readyMarker, launch.bootTimeoutMs ?? DEFAULT_QEMU_BOOT_TIMEOUT_MS);
    }
  } catch (err) {
    await stopQemuVm(runtimeDir, spec.vmId).catch(() => undefined);
    throw err;
  }
  return spec;
}

/**
 * Records a QEMU that someone else started (or that arrived by migration) as this site's VM `vmId`: its monitor is
 * linked as the VM's `qmp.sock`, its spec written. The monitor must answer as QEMU's QMP (UNAVAILABLE otherwise).
 */
export async function registerQemuVm(
  runtimeDir: string,
  spec: QemuVmSpec,
  monitor: string,
  pid?: number,
): Promise<QemuVmSpec> {
  if (!NAME.test(spec.vmId)) throw new QemuConfigError([`vmId '${spec.vmId}' is not 1-64 of [A-Za-z0-9_.-]`]);
  const paths = qemuVmPaths(runtimeDir, spec.vmId);
  const qmp = await QmpClient.connect(monitor, { timeoutMs: QMP_CONNECT_TIMEOUT_MS }).catch((err: unknown) => {
    throw new WanmigError(ErrorCode.Unavailable, `${monitor} does not answer as a QEMU QMP monitor`, { cause: err });
  });
  await qmp.close();
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  const existing = await readlink(paths.qmpSocket).catch(() => undefined);
  if (existing !== monitor) {
    await rm(paths.qmpSocket, { force: true });
    await symlink(monitor, paths.qmpSocket);
  }
  if (pid !== undefined) await writeFile(paths.pidFile, `${pid}\n`);
  await writeFile(paths.spec, JSON.stringify(spec, null, 2));
  return spec;
}

/** Forgets a registered VM (its dir: link, pid file, spec) and leaves its QEMU running: the undo of registerQemuVm. */
export async function unregisterQemuVm(runtimeDir: string, vmId: string): Promise<void> {
  if (!NAME.test(vmId)) return;
  await rm(qemuVmPaths(runtimeDir, vmId).dir, { recursive: true, force: true });
}

/** The spec of this site's QEMU VM `vmId`; QemuVmNotFoundError when there is none. */
export async function readQemuVmSpec(runtimeDir: string, vmId: string): Promise<QemuVmSpec> {
  if (!NAME.test(vmId)) throw new QemuVmNotFoundError(vmId, runtimeDir);
  const text = await readFile(qemuVmPaths(runtimeDir, vmId).spec, 'utf8').catch(() => undefined);
  if (text === undefined) throw new QemuVmNotFoundError(vmId, runtimeDir);
  return JSON.parse(text) as QemuVmSpec;
}

export async function qemuVmExists(runtimeDir: string, vmId: string): Promise<boolean> {
  const pid = await qemuVmPid(runtimeDir, vmId);
  return pid !== undefined && alive(pid);
}

/** The pid the VM's pid file names, if any. */
export async function qemuVmPid(runtimeDir: string, vmId: string): Promise<number | undefined> {
  const text = await readFile(qemuVmPaths(runtimeDir, vmId).pidFile, 'utf8').catch(() => undefined);
  const pid = text === undefined ? NaN : Number.parseInt(text.trim(), 10);
  return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
}

/** The id of this site's QEMU VM whose process is `pid`, if one is. */
export async function qemuVmIdOfPid(runtimeDir: string, pid: number): Promise<string | undefined> {
  const ids = await readdir(join(runtimeDir, QEMU_VM_SUBDIR)).catch(() => [] as string[]);
  for (const vmId of ids) {
    if ((await qemuVmPid(runtimeDir, vmId)) === pid && alive(pid)) return vmId;
  }
  return undefined;
}

/** A short QMP connection to the VM's monitor: NOT_FOUND without such a VM, UNAVAILABLE when it does not answer. */
export async function connectQemuVm(runtimeDir: string, vmId: string, timeoutMs = QMP_CONNECT_TIMEOUT_MS) {
  await readQemuVmSpec(runtimeDir, vmId);
  const { qmpSocket } = qemuVmPaths(runtimeDir, vmId);
  return QmpClient.connect(qmpSocket, { timeoutMs }).catch((err: unknown) => {
    throw new WanmigError(ErrorCode.Unavailable, `QEMU VM '${vmId}' does not answer on its monitor`, { cause: err });
  });
}

/** The VM's run state (`running`, `paused`, `postmigrate`...), or `stopped` when its QEMU is gone. */
export async function qemuVmState(runtimeDir: string, vmId: string): Promise<string> {
  if (!(await qemuVmExists(runtimeDir, vmId))) {
    // A VM that arrived by migration has no pid file of ours: its monitor decides.
    if ((await qemuVmPid(runtimeDir, vmId)) !== undefined) return 'stopped';
  }
  let qmp: QmpClient;
  try {
    qmp = await connectQemuVm(runtimeDir, vmId, 3000);
  } catch {
    return 'stopped';
  }
  try {
    return (await qmp.execute<QmpStatus>('query-status')).status;
  } finally {
    await qmp.close();
  }
}

/** Stops the VM's QEMU (QMP quit, then SIGKILL by its recorded pid) and removes its dir. Idempotent. */
export async function stopQemuVm(runtimeDir: string, vmId: string, timeoutMs = 10_000): Promise<void> {
  const paths = qemuVmPaths(runtimeDir, vmId);
  const pid = await qemuVmPid(runtimeDir, vmId);
  const qmp = await QmpClient.connect(paths.qmpSocket, { timeoutMs: 3000 }).catch(() => undefined);
  if (qmp) {
    await qmp.execute('quit', undefined, { timeoutMs: 3000 }).catch(() => undefined);
    await qmp.close().catch(() => undefined);
  }
  if (pid !== undefined) {
    const deadline = Date.now() + timeoutMs;
    while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  await rm(paths.dir, { recursive: true, force: true });
}

async function waitForMarker(
  paths: QemuVmPaths,
  pid: number | undefined,
  marker: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const serial = await readFile(paths.serialLog, 'utf8').catch(() => '');
    if (serial.includes(marker)) return;
    if (pid !== undefined && !alive(pid)) {
      throw new QemuStartError(paths.dir, `QEMU exited before "${marker}"`, { stderrTail: serial.slice(-2000) });
    }
    if (Date.now() > deadline) {
      throw new QemuStartError(paths.dir, `no "${marker}" on the serial console within ${timeoutMs} ms`, {
        stderrTail: serial.slice(-2000),
      });
    }
    await new Promise((r) => setTimeout(r, BOOT_POLL_MS));
  }
}

async function checkLaunch(runtimeDir: string, launch: QemuLaunchSpec): Promise<void> {
  const problems: string[] = [];
  if (!NAME.test(launch.vmId)) problems.push(`vmId '${launch.vmId}' is not 1-64 of [A-Za-z0-9_.-]`);
  if (!Number.isSafeInteger(launch.ramMiB) || launch.ramMiB < 16) problems.push(`ramMiB ${launch.ramMiB} is < 16`);
  if (launch.cpus !== undefined && (!Number.isSafeInteger(launch.cpus) || launch.cpus < 1))
    problems.push(`cpus must be a positive integer, got ${launch.cpus}`);
  problems.push(...(await bootProblems(launch)));
  const disk = await stat(launch.diskPath).catch(() => undefined);
  if (!disk?.isFile()) problems.push(`disk ${launch.diskPath} is not a file`);
  const longest = qemuVmPaths(runtimeDir, launch.vmId).monitorSocket;
  if (Buffer.byteLength(longest) > MAX_UNIX_SOCKET_PATH)
    problems.push(`runtime dir too long for a unix socket path: ${longest}`);
  if (problems.length > 0) throw new QemuConfigError(problems);
}

/** Whether `path` is a socket or a link to one (a registered VM's monitor). */
export async function isQemuMonitor(path: string): Promise<boolean> {
  const info = await lstat(path).catch(() => undefined);
  if (!info) return false;
  if (info.isSocket()) return true;
  return info.isSymbolicLink() && (await stat(path).catch(() => undefined))?.isSocket() === true;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

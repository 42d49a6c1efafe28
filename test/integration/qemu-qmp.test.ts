import { execFile } from 'node:child_process';
import { access, chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '@wanmig/protocol';
import {
  Accelerator,
  QemuProcess,
  QemuStartError,
  QmpClosedError,
  QmpCommandError,
  bootUntilMarker,
  findQemuBinary,
  probeAccelerator,
  type QemuBinary,
  type QemuStartOptions,
  type QmpStatus,
  type QmpVersion,
} from '@wanmig/hypervisor';
import { trackDir, trackPid, untrackDir, untrackPid } from '@wanmig/testing';

const run = promisify(execFile);
const MARKER = 'WANMIG-TINY-GUEST-UP';
/** Under TCG the Debian kernel reaches a busybox init in 5-20 s on 2 shared cores; allow three times that. */
const TCG_BOOT_TIMEOUT_MS = 60_000;
const BUSYBOX = '/bin/busybox';

/** A machine with no board, no devices and no guest: only QMP to talk to. */
const EMPTY_MACHINE = ['-machine', 'none', '-nodefaults', '-display', 'none'];

describe('QEMU driven over QMP (real qemu-system-x86_64)', () => {
  let dir: string;
  let qemuBin: QemuBinary;
  const started: QemuProcess[] = [];
  const track = (pid: number) => trackPid(pid);

  const start = async (name: string, extra: Partial<QemuStartOptions> = {}) => {
    const qemu = await QemuProcess.start({
      name,
      args: EMPTY_MACHINE,
      qmpSocket: join(dir, `${name}.qmp`),
      logFile: join(dir, `${name}.log`),
      readyTimeoutMs: 15_000,
      qemuBin: qemuBin.path,
      onSpawn: track,
      ...extra,
    });
    started.push(qemu);
    void qemu.exited.then(() => untrackPid(qemu.pid));
    return qemu;
  };

  beforeAll(async () => {
    qemuBin = await findQemuBinary(); // QemuNotFoundError: install qemu-system-x86 (deploy/bootstrap.sh does)
    dir = await mkdtemp(join(tmpdir(), 'wanmig-qemu-'));
    trackDir(dir);
  });

  afterAll(async () => {
    await Promise.all(started.map((q) => q.stop(5000)));
    if (dir) {
      await rm(dir, { recursive: true, force: true });
      untrackDir(dir);
    }
  });

  it('greets with its version, which query-version repeats; query-status says running', async () => {
    const qemu = await start('status');
    expect(qemu.pid).toBeGreaterThan(0);
    expect(qemu.qmp.version).toMatchObject({ qemu: qemuBin.version });
    await expect(qemu.qmp.execute<QmpVersion>('query-version')).resolves.toEqual(qemu.qmp.version);
    await expect(qemu.qmp.execute<QmpStatus>('query-status')).resolves.toMatchObject({
      status: 'running',
      running: true,
    });
  });

  it('rejects an unknown command with QmpCommandError (CommandNotFound) and keeps the connection', async () => {
    const qemu = await start('unknown');
    const err = await qemu.qmp.execute('no-such-command').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpCommandError);
    expect(err).toMatchObject({
      command: 'no-such-command',
      errorClass: 'CommandNotFound',
      code: ErrorCode.InvalidRequest,
    });
    expect((err as QmpCommandError).desc).toContain('no-such-command');
    await expect(qemu.qmp.execute('query-status')).resolves.toMatchObject({ status: 'running' });
  });

  it('stop and cont emit STOP and RESUME, and query-status follows', async () => {
    const qemu = await start('pause');
    const seen: string[] = [];
    qemu.qmp.on('*', (e) => seen.push(e.event));
    const stopped = qemu.qmp.waitForEvent('STOP');
    await qemu.qmp.execute('stop');
    await stopped;
    await expect(qemu.qmp.execute<QmpStatus>('query-status')).resolves.toMatchObject({
      status: 'paused',
      running: false,
    });
    const resumed = qemu.qmp.waitForEvent('RESUME');
    await qemu.qmp.execute('cont');
    await resumed;
    await expect(qemu.qmp.execute<QmpStatus>('query-status')).resolves.toMatchObject({ running: true });
    expect(seen).toEqual(['STOP', 'RESUME']);
  });

  it('quit emits SHUTDOWN (host-qmp-quit), then QEMU exits 0 and removes its socket', async () => {
    const qemu = await start('quit');
    const shutdown = qemu.qmp.waitForEvent<{ guest: boolean; reason: string }>('SHUTDOWN');
    await qemu.qmp.execute('quit').catch((err: unknown) => {
      if (!(err instanceof QmpClosedError)) throw err; // QEMU may close before the reply is read
    });
    expect((await shutdown).data).toEqual({ guest: false, reason: 'host-qmp-quit' });
    await expect(qemu.exited).resolves.toEqual({ code: 0, signal: null });
    await qemu.qmp.closed;
    await expect(access(qemu.qmpSocket)).rejects.toThrow(/ENOENT/);
  });

  it('rejects what is in flight with QmpClosedError when QEMU dies', async () => {
    const qemu = await start('crash');
    const waiting = expect(qemu.qmp.waitForEvent('NEVER', undefined, 10_000)).rejects.toBeInstanceOf(QmpClosedError);
    await expect(qemu.kill('SIGKILL')).resolves.toEqual({ code: null, signal: 'SIGKILL' });
    await waiting;
    await expect(qemu.qmp.execute('query-status')).rejects.toBeInstanceOf(QmpClosedError);
    await expect(access(qemu.qmpSocket)).rejects.toThrow(/ENOENT/);
  });

  it('stop() quits a running QEMU through QMP', async () => {
    const qemu = await start('stop');
    await expect(qemu.stop(5000)).resolves.toEqual({ code: 0, signal: null });
    expect(qemu.qmp.isOpen).toBe(false);
  });

  it('reports QEMU exiting before QMP is up with a QemuStartError quoting its stderr', async () => {
    const err = await start('bad-machine', { args: ['-machine', 'no-such-board', '-nodefaults', '-display', 'none'] })
      .then(() => undefined)
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuStartError);
    expect(err).toMatchObject({ code: ErrorCode.Unavailable, exitCode: 1 });
    expect((err as QemuStartError).stderrTail).toContain('unsupported machine type');
    expect((err as Error).message).toMatch(
      /exited 1 before its QMP socket was up; last stderr lines:\n.*unsupported machine/,
    );
    expect(await readFile(join(dir, 'bad-machine.log'), 'utf8')).toContain('unsupported machine type');
  });

  describe('accelerator probe (Debian kernel + a busybox initramfs that prints a marker and powers off)', () => {
    let kernel: string;
    let initrd: string;

    beforeAll(async () => {
      kernel = await newestKernel();
      initrd = await buildTinyInitramfs(join(dir, 'tiny-guest'));
    });

    it('the tiny guest boots to its marker under TCG and powers off', async () => {
      const boot = await bootUntilMarker({
        accel: Accelerator.Tcg,
        kernel,
        initrd,
        appendExtra: 'quiet',
        marker: MARKER,
        timeoutMs: TCG_BOOT_TIMEOUT_MS,
        qemuBin: qemuBin.path,
        onSpawn: track,
      });
      console.info(`[qemu-qmp] tiny guest under TCG: marker after ${boot.ms} ms; exit ${JSON.stringify(boot.exit)}`);
      expect(boot.seen, `serial:\n${boot.serialTail}\nstderr:\n${boot.stderrTail}`).toBe(true);
      expect(boot.ms).toBeLessThan(TCG_BOOT_TIMEOUT_MS);
    });

    it('chooses kvm or tcg, with a reason', async () => {
      const t0 = performance.now();
      const result = await probeAccelerator({
        kernel,
        initrd,
        appendExtra: 'quiet',
        marker: MARKER,
        qemuBin: qemuBin.path,
        onSpawn: track,
      });
      const ms = Math.round(performance.now() - t0);
      console.info(`[qemu-qmp] accelerator probe chose ${result.accel} in ${ms} ms: ${result.reason}`);
      expect(Object.values(Accelerator)).toContain(result.accel);
      expect(result.reason).not.toBe('');
      if (result.accel === Accelerator.Kvm) expect(result.kvmMs).toBeGreaterThan(0);
      else expect(result.kvmMs).toBeUndefined();
      // Kept for the life of the process.
      await expect(probeAccelerator({ kernel: '/nonexistent', initrd: '/nonexistent', marker: 'x' })).resolves.toBe(
        result,
      );
    });
  });
});

async function newestKernel(): Promise<string> {
  const kernels = (await readdir('/boot').catch(() => [])).filter((f) => f.startsWith('vmlinuz-')).sort();
  if (kernels.length === 0) throw new Error('no /boot/vmlinuz-*: install linux-image-amd64');
  return join('/boot', kernels[kernels.length - 1]);
}

/** An initramfs of a static busybox and an /init that prints MARKER on the serial console and powers off. */
async function buildTinyInitramfs(workDir: string): Promise<string> {
  const root = join(workDir, 'root');
  await mkdir(join(root, 'bin'), { recursive: true });
  const busybox = await readFile(BUSYBOX).catch(() => undefined);
  if (!busybox) throw new Error(`no ${BUSYBOX}: install busybox-static`);
  if (hasElfInterpreter(busybox)) throw new Error(`${BUSYBOX} is dynamically linked: install busybox-static`);
  await copyFile(BUSYBOX, join(root, 'bin', 'busybox'));
  const init = ['#!/bin/busybox sh', `/bin/busybox echo ${MARKER}`, '/bin/busybox poweroff -f', ''].join('\n');
  await writeFile(join(root, 'init'), init);
  await chmod(join(root, 'init'), 0o755);
  const initrd = join(workDir, 'initrd.cpio');
  // busybox's own find and cpio: no other tool needed. The kernel takes an uncompressed newc archive.
  await run('/bin/sh', ['-c', `${BUSYBOX} find . | ${BUSYBOX} cpio -o -H newc > '${initrd}'`], {
    cwd: root,
    timeout: 30_000,
  });
  return initrd;
}

/** Whether an ELF64 executable names a dynamic loader (a PT_INTERP program header): it cannot run alone. */
function hasElfInterpreter(elf: Buffer): boolean {
  const PT_INTERP = 3;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) if (elf.readUInt32LE(phoff + i * phentsize) === PT_INTERP) return true;
  return false;
}

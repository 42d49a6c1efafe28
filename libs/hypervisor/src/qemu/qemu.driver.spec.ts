import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@wanmig/protocol';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QemuConfigError, QemuStartError } from './qemu.errors.js';
import {
  DEFAULT_ANNOUNCE,
  QEMU_EXITED,
  QemuDriver,
  type QemuIncomingSpec,
  type QemuProcessHandle,
} from './qemu.driver.js';
import type { QemuExit, QemuStartOptions } from './qemu.process.js';
import type { QmpClient } from './qmp.client.js';
import { QmpCommandError } from './qmp.errors.js';

/** A started QEMU as the driver sees it: QMP answers from `answers` (a function throws to fail the command). */
class FakeQemu implements QemuProcessHandle {
  readonly pid = 4242;
  readonly commands: Array<{ command: string; args?: Record<string, unknown> }> = [];
  readonly answers = new Map<string, unknown>([['query-status', { status: 'inmigrate', running: false }]]);
  exit: QemuExit | undefined;
  stops = 0;
  open = true;
  private resolveExit!: (exit: QemuExit) => void;
  readonly exited = new Promise<QemuExit>((resolve) => (this.resolveExit = resolve));

  readonly qmp = {
    execute: (command: string, args?: Record<string, unknown>) => {
      this.commands.push({ command, args });
      const answer = this.answers.get(command) ?? {};
      return typeof answer === 'function' ? Promise.reject((answer as () => Error)()) : Promise.resolve(answer);
    },
    get isOpen() {
      return true;
    },
  } as unknown as QmpClient;

  stop(): Promise<QemuExit> {
    this.stops++;
    this.exit = { code: 0, signal: null };
    this.resolveExit(this.exit);
    return Promise.resolve(this.exit);
  }

  stderrTail(): string {
    return '';
  }
}

describe('QemuDriver.startIncoming', () => {
  let dir: string;
  let spec: QemuIncomingSpec;
  let started: QemuStartOptions[];
  let fake: FakeQemu;
  let driver: QemuDriver;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-qdrv-'));
    for (const file of ['vmlinuz', 'initrd', 'disk.img']) await writeFile(join(dir, file), 'x');
    spec = {
      name: 'wanmig-in-1',
      kernel: join(dir, 'vmlinuz'),
      initrd: join(dir, 'initrd'),
      diskPath: join(dir, 'disk.img'),
      ramMiB: 256,
      runDir: join(dir, 'run'),
    };
    started = [];
    fake = new FakeQemu();
    driver = new QemuDriver({
      start: (options) => {
        started.push(options);
        return Promise.resolve(fake);
      },
    });
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('starts the guest paused on -incoming unix:<runDir>/incoming.sock, the disk in place on node disk0', async () => {
    const vm = await driver.startIncoming({ ...spec, servicePort: 10022, append: 'console=ttyS0 quiet' });
    expect(started).toHaveLength(1);
    const { args, qmpSocket, logFile, name } = started[0];
    expect({ name, qmpSocket, logFile }).toEqual({
      name: 'wanmig-in-1',
      qmpSocket: join(dir, 'run', 'qmp.sock'),
      logFile: join(dir, 'run', 'qemu.log'),
    });
    const after = (flag: string) => args[args.indexOf(flag) + 1];
    expect(after('-machine')).toBe('q35');
    expect(after('-accel')).toBe('tcg');
    expect(after('-m')).toBe('256');
    expect(after('-smp')).toBe('1');
    expect(after('-kernel')).toBe(spec.kernel);
    expect(after('-append')).toBe('console=ttyS0 quiet');
    expect(after('-incoming')).toBe(`unix:${join(dir, 'run', 'incoming.sock')}`);
    expect(args).toContain('-S');
    expect(args).toContain('virtio-blk-pci,drive=disk0,id=vda');
    expect(args).toContain('user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:10022-:7777');
    const blockdevs = args.flatMap((a, i) => (args[i - 1] === '-blockdev' ? [JSON.parse(a) as object] : []));
    expect(blockdevs).toEqual([
      { driver: 'file', filename: spec.diskPath, 'node-name': 'disk0-file', cache: { direct: true } },
      { driver: 'raw', file: 'disk0-file', 'node-name': 'disk0' },
    ]);
    // Migration events on, so that whoever watches the destination sees its incoming migration's states.
    expect(fake.commands).toEqual([
      { command: 'migrate-set-capabilities', args: { capabilities: [{ capability: 'events', state: true }] } },
    ]);
    expect(vm).toMatchObject({
      pid: 4242,
      servicePort: 10022,
      incomingSocket: join(dir, 'run', 'incoming.sock'),
      monitorSocket: join(dir, 'run', 'monitor.qmp'),
    });
    // A second QMP monitor for observers, beside the driver's own (-qmp, added by QemuProcess).
    expect(args.slice(args.indexOf('-mon') - 2, args.indexOf('-mon') + 2)).toEqual([
      '-chardev',
      `socket,id=monitor1,path=${join(dir, 'run', 'monitor.qmp')},server=on,wait=off`,
      '-mon',
      'chardev=monitor1,mode=control',
    ]);
    expect(await vm.status()).toEqual({ status: 'inmigrate', running: false });
  });

  it('picks a free service port when none is given, and another one when QEMU lost the race for it', async () => {
    let calls = 0;
    const racing = new QemuDriver({
      start: (options) => {
        started.push(options);
        if (++calls === 1) {
          throw new QemuStartError('x', 'exited 1', { stderrTail: 'qemu: Could not set up host forwarding rule' });
        }
        return Promise.resolve(fake);
      },
    });
    const vm = await racing.startIncoming(spec);
    expect(started).toHaveLength(2);
    expect(vm.servicePort).toBeGreaterThan(0);
    expect(started[1].args.join(' ')).toContain(`hostfwd=tcp:127.0.0.1:${vm.servicePort}-:7777`);
    // A fixed port that is taken is the caller's to change: no retry.
    started = [];
    calls = 0;
    await expect(racing.startIncoming({ ...spec, servicePort: 10022 })).rejects.toBeInstanceOf(QemuStartError);
    expect(started).toHaveLength(1);
  });

  it('puts the NIC on a tap inside a network namespace when asked: QEMU runs there, no port is forwarded', async () => {
    const network = { netns: 'wm123456-b', tap: 'tap0', mac: '52:54:00:AA:bb:01' };
    const vm = await driver.startIncoming({ ...spec, servicePort: 10022, network });
    expect(started).toHaveLength(1);
    const { args, netns } = started[0];
    expect(netns).toBe('wm123456-b');
    expect(args.join(' ')).not.toContain('hostfwd');
    const after = (flag: string) => args.flatMap((a, i) => (args[i - 1] === flag ? [a] : []));
    expect(after('-netdev')).toEqual(['tap,id=net0,ifname=tap0,script=no,downscript=no']);
    // The same device as with user-mode networking (QEMU migrates the device, not its backend), with the MAC.
    expect(after('-device')).toContain('virtio-net-pci,netdev=net0,id=net0dev,romfile=,mac=52:54:00:aa:bb:01');
    expect(vm.servicePort).toBe(0);
  });

  it('refuses a tap network it could not name to QEMU', async () => {
    const err = await driver
      .startIncoming({ ...spec, network: { netns: 'a b', tap: 'x'.repeat(16), mac: '01:00:5e:00:00:01' } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuConfigError);
    expect((err as QemuConfigError).problems).toEqual([
      expect.stringContaining('network.netns'),
      expect.stringContaining('network.tap'),
      expect.stringContaining('multicast'),
    ]);
    expect(started).toHaveLength(0);
  });

  it('refuses a spec it cannot start, naming every problem, without starting QEMU', async () => {
    const err = await driver
      .startIncoming({
        ...spec,
        name: 'a b',
        kernel: join(dir, 'missing'),
        diskPath: join(dir, 'nope.img'),
        ramMiB: 4,
        append: 'a\nb',
        runDir: join(dir, 'x'.repeat(120)),
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuConfigError);
    expect((err as QemuConfigError).code).toBe(ErrorCode.InvalidRequest);
    expect((err as QemuConfigError).problems).toHaveLength(6);
    expect(started).toHaveLength(0);
  });

  it('turns postcopy-ram on with events when post-copy may come; a host without it is UNAVAILABLE', async () => {
    await driver.startIncoming({ ...spec, postcopy: true });
    expect(fake.commands).toEqual([
      {
        command: 'migrate-set-capabilities',
        args: {
          capabilities: [
            { capability: 'events', state: true },
            { capability: 'postcopy-ram', state: true },
          ],
        },
      },
    ]);
    fake.answers.set(
      'migrate-set-capabilities',
      () => new QmpCommandError('migrate-set-capabilities', 'GenericError', 'Postcopy is not supported'),
    );
    const err = await driver.startIncoming({ ...spec, postcopy: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QemuConfigError);
    expect(err).toMatchObject({ code: ErrorCode.Unavailable, message: /post-copy.*Postcopy is not supported/ });
    expect(fake.stops).toBe(1);
  });

  it('stops QEMU again when it does not take the migration capabilities', async () => {
    fake.answers.set(
      'migrate-set-capabilities',
      () => new QmpCommandError('migrate-set-capabilities', 'GenericError', 'no'),
    );
    await expect(driver.startIncoming(spec)).rejects.toBeInstanceOf(QmpCommandError);
    expect(fake.stops).toBe(1);
  });

  it('resume: cont, then announce-self; a failed announce is a warning, a failed cont a failure', async () => {
    const vm = await driver.startIncoming(spec);
    fake.commands.length = 0;
    fake.answers.set('query-status', { status: 'running', running: true });
    expect(await vm.resume()).toEqual({ status: 'running', warnings: [] });
    expect(fake.commands.map((c) => c.command)).toEqual(['cont', 'announce-self', 'query-status']);
    expect(fake.commands[1].args).toEqual(DEFAULT_ANNOUNCE);

    fake.answers.set('announce-self', () => new QmpCommandError('announce-self', 'GenericError', 'no NIC to announce'));
    const announced = await vm.resume();
    expect(announced.status).toBe('running');
    expect(announced.warnings).toEqual([expect.stringMatching(/^announce-self: .*no NIC to announce/)]);

    fake.commands.length = 0;
    expect(await vm.resume(false)).toEqual({ status: 'running', warnings: [] });
    expect(fake.commands.map((c) => c.command)).toEqual(['cont', 'query-status']);

    fake.answers.set('cont', () => new QmpCommandError('cont', 'GenericError', 'migration is not finished'));
    await expect(vm.resume()).rejects.toBeInstanceOf(QmpCommandError);
  });

  it('stop is idempotent, and a stopped QEMU reports itself exited', async () => {
    const vm = await driver.startIncoming(spec);
    await writeFile(vm.monitorSocket, ''); // stands for the socket QEMU leaves behind
    await Promise.all([vm.stop(), vm.stop()]);
    await vm.stop();
    expect(fake.stops).toBe(1);
    expect(await vm.status()).toEqual({ status: QEMU_EXITED, running: false });
    await expect(access(vm.monitorSocket)).rejects.toThrow();
  });
});

import { describe, expect, it } from 'vitest';
import { qemuOptions, qemuOpts, qmpSocketPaths, readQemuCommandLine } from './qemu.command-line.js';
import { guestArgs } from './qemu.driver.js';

const BIN = '/usr/bin/qemu-system-x86_64';
const FILE_NODE = JSON.stringify({
  driver: 'file',
  filename: '/srv/vms/web.img',
  'node-name': 'disk0-file',
  cache: { direct: true },
});
const RAW_NODE = JSON.stringify({ driver: 'raw', file: 'disk0-file', 'node-name': 'disk0' });

/** A QEMU as libs/testing's bootGuest starts it: what a user of wanmig would run by hand. */
function userQemu(overrides: { drop?: string[]; add?: string[]; replace?: Record<string, string> } = {}): string[] {
  const options: [string, string?][] = [
    ['-name', 'wanmig-guest'],
    ['-machine', 'q35'],
    ['-accel', 'tcg'],
    ['-m', '256'],
    ['-smp', '1'],
    ['-nodefaults'],
    ['-no-user-config'],
    ['-display', 'none'],
    ['-no-reboot'],
    ['-kernel', '/var/cache/wanmig/guest/vmlinuz'],
    ['-initrd', '/var/cache/wanmig/guest/initramfs.cpio.gz'],
    ['-append', 'console=ttyS0 quiet panic=-1'],
    ['-chardev', 'file,id=serial0,path=/tmp/g/serial.log'],
    ['-serial', 'chardev:serial0'],
    ['-blockdev', FILE_NODE],
    ['-blockdev', RAW_NODE],
    ['-device', 'virtio-blk-pci,drive=disk0,id=vda'],
    ['-netdev', 'user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:41097-:7777'],
    ['-device', 'virtio-net-pci,netdev=net0,id=net0dev,romfile='],
    ['-qmp', 'unix:/tmp/g/qmp.sock,server=on,wait=off'],
  ];
  const args: string[] = [];
  for (const [name, value] of options) {
    if (overrides.drop?.includes(name)) continue;
    args.push(name);
    if (value !== undefined) args.push(overrides.replace?.[`${name} ${value}`] ?? value);
  }
  return [BIN, ...args, ...(overrides.add ?? [])];
}

const problemsOf = (argv: string[], diskNode = 'disk0') => readQemuCommandLine(argv, { diskNode }).problems;

describe('qemuOpts', () => {
  it('reads the implied key, key=value pairs, flags and doubled commas', () => {
    expect(qemuOpts('socket,id=m,path=/run/a,,b.sock,server', 'backend')).toEqual([
      ['backend', 'socket'],
      ['id', 'm'],
      ['path', '/run/a,b.sock'],
      ['server', 'on'],
    ]);
    expect(qemuOpts('type=q35,accel=kvm', 'type')).toEqual([
      ['type', 'q35'],
      ['accel', 'kvm'],
    ]);
  });
});

describe('qemuOptions', () => {
  it('tells flags from options with a value; a bare word is a disk image', () => {
    expect(qemuOptions(['-nodefaults', '--m', '256', '-S', 'disk.img', '-append', '-x'])).toEqual([
      { name: 'nodefaults' },
      { name: 'm', value: '256' },
      { name: 'S' },
      { name: 'hda', value: 'disk.img' },
      { name: 'append', value: '-x' },
    ]);
  });
});

describe('qmpSocketPaths', () => {
  it('finds -qmp unix sockets and socket chardevs of control monitors, resolved against the working dir', () => {
    const argv = [
      BIN,
      ...['-qmp', 'unix:/run/q,,1.sock,server=on,wait=off'],
      ...['-chardev', 'socket,id=mon1,path=run/mon.sock,server=on,wait=off', '-mon', 'chardev=mon1,mode=control'],
      ...['-chardev', 'socket,id=hmp,path=/run/hmp.sock,server=on,wait=off', '-mon', 'chardev=hmp'],
      ...['-qmp', 'tcp:127.0.0.1:4444,server=on'],
    ];
    expect(qmpSocketPaths(argv, '/srv/vm')).toEqual(['/run/q,1.sock', '/srv/vm/run/mon.sock']);
  });
});

describe('readQemuCommandLine', () => {
  it('reads the machine of a QEMU started as bootGuest starts one', () => {
    expect(readQemuCommandLine(userQemu(), { diskNode: 'disk0' })).toEqual({
      machine: {
        kernel: '/var/cache/wanmig/guest/vmlinuz',
        initrd: '/var/cache/wanmig/guest/initramfs.cpio.gz',
        append: 'console=ttyS0 quiet panic=-1',
        machine: 'q35',
        accel: 'tcg',
        ramMiB: 256,
        cpus: 1,
        diskPath: '/srv/vms/web.img',
        diskNode: 'disk0',
        servicePort: 41097,
        guestPort: 7777,
      },
      problems: [],
    });
  });

  it('reads back what a destination starts (guestArgs): the two agree', () => {
    const spec = {
      kernel: '/k',
      initrd: '/i',
      append: 'console=ttyS0',
      machine: 'pc' as const,
      accel: 'kvm' as const,
      ramMiB: 1024,
      cpus: 2,
      diskPath: '/d.img',
      guestPort: 8080,
    };
    const argv = [BIN, ...guestArgs(spec, '/serial.log', 40000)];
    expect(readQemuCommandLine(argv, { diskNode: 'disk0' }).machine).toEqual({
      ...spec,
      diskNode: 'disk0',
      servicePort: 40000,
    });
  });

  it("takes QEMU's defaults for what is not given, sizes with suffixes, relative paths from the working dir", () => {
    const argv = userQemu({
      drop: ['-machine', '-accel', '-smp', '-blockdev'],
      replace: { '-m 256': '1.5G', '-kernel /var/cache/wanmig/guest/vmlinuz': 'boot/vmlinuz' },
      add: ['-blockdev', 'driver=raw,node-name=disk0,file.driver=file,file.filename=web.img'],
    });
    expect(readQemuCommandLine(argv, { diskNode: 'disk0', cwd: '/srv/vms' }).machine).toMatchObject({
      kernel: '/srv/vms/boot/vmlinuz',
      machine: 'pc',
      accel: 'tcg',
      ramMiB: 1536,
      cpus: 1,
      diskPath: '/srv/vms/web.img',
    });
    const kvm = userQemu({ drop: ['-accel'], replace: { '-machine q35': 'q35,accel=kvm:tcg' } });
    expect(readQemuCommandLine(kvm, { diskNode: 'disk0' }).machine?.accel).toBe('kvm');
    expect(
      readQemuCommandLine(userQemu({ drop: ['-accel'], add: ['-enable-kvm'] }), { diskNode: 'disk0' }).machine,
    ).toMatchObject({ accel: 'kvm' });
  });

  it('takes a file node used directly as the disk', () => {
    const argv = userQemu({
      drop: ['-blockdev'],
      replace: { '-device virtio-blk-pci,drive=disk0,id=vda': 'virtio-blk-pci,drive=hd0' },
      add: ['-blockdev', 'driver=file,node-name=hd0,filename=/srv/hd0.img'],
    });
    expect(readQemuCommandLine(argv, { diskNode: 'hd0' }).machine).toMatchObject({
      diskPath: '/srv/hd0.img',
      diskNode: 'hd0',
    });
  });

  it('says that only user-mode NICs are supported', () => {
    const tap = userQemu({
      replace: { '-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:41097-:7777': 'tap,id=net0,ifname=tap0' },
    });
    expect(problemsOf(tap)).toEqual(['-netdev tap,id=net0: only user-mode NICs (-netdev user) are supported']);
    expect(problemsOf(userQemu({ drop: ['-netdev'], add: ['-nic', 'user,model=virtio'] }))).toEqual(
      expect.arrayContaining([expect.stringMatching(/^-nic user,model=virtio: only user-mode NICs given as -netdev/)]),
    );
  });

  it('says that only raw file images are supported', () => {
    const qcow2 = userQemu({ add: ['-blockdev', '{"driver":"qcow2","file":"disk0-file","node-name":"q0"}'] });
    expect(problemsOf(qcow2, 'q0')).toEqual(
      expect.arrayContaining(['node q0 is qcow2: only raw file images are supported']),
    );
    const nbd = userQemu({
      replace: {
        [`-blockdev ${FILE_NODE}`]: '{"driver":"nbd","server":{"type":"unix","path":"/s"},"node-name":"disk0-file"}',
      },
    });
    expect(problemsOf(nbd)).toEqual(['node disk0 stands on a nbd node: only raw file images are supported']);
    expect(problemsOf(userQemu({ add: ['-drive', 'file=/x.img,format=raw'] }))).toEqual([
      '-drive file=/x.img,format=raw: only raw file images given as -blockdev are supported',
    ]);
  });

  it('names a disk node the command line does not have', () => {
    expect(problemsOf(userQemu(), 'disk9')).toEqual(
      expect.arrayContaining(['no -blockdev with node-name disk9: the disk must be given as -blockdev nodes']),
    );
  });

  it('names a disk device on another node: a second disk, or the disk named by its file node', () => {
    expect(problemsOf(userQemu(), 'disk0-file')).toEqual([
      '-device virtio-blk-pci,drive=disk0,id=vda: its drive is not node disk0-file (one disk, on a virtio-blk-pci, is supported)',
      'no -device virtio-blk-pci,drive=disk0-file: the disk must be a virtio-blk-pci',
    ]);
  });

  it('names every option a destination would not repeat', () => {
    const argv = userQemu({
      drop: ['-nodefaults'],
      replace: { '-m 256': '256M,slots=2,maxmem=1G', '-smp 1': '2,sockets=2' },
      add: ['-cpu', 'host', '-device', 'virtio-rng-pci', '-usb'],
    });
    expect(problemsOf(argv)).toEqual([
      '-cpu host: a destination would start the VM without it',
      '-usb: a destination would start the VM without it',
      'no -nodefaults: QEMU adds default devices (VGA, CD-ROM...) that a destination does not start',
      '-m slots=2: memory hotplug is not supported (a destination starts -m SIZE)',
      '-m maxmem=1G: memory hotplug is not supported (a destination starts -m SIZE)',
      '-smp sockets=2: a destination starts -smp N (no topology, no CPU hotplug)',
      "-device virtio-rng-pci: a destination starts only the disk's virtio-blk-pci and the NIC's virtio-net-pci",
    ]);
  });

  it("refuses what would change the devices' PCI slots or ROMs", () => {
    const swapped = [
      BIN,
      ...userQemu({ drop: ['-device'] }).slice(1),
      ...['-device', 'virtio-net-pci,netdev=net0,romfile='],
      ...['-device', 'virtio-blk-pci,drive=disk0,addr=0x5'],
    ];
    expect(problemsOf(swapped)).toEqual([
      "-device virtio-blk-pci addr=0x5: a destination starts the disk's device without it",
      "the NIC comes before the disk: a destination adds the disk's device first (PCI slots follow)",
    ]);
    const rom = userQemu({
      replace: { '-device virtio-net-pci,netdev=net0,id=net0dev,romfile=': 'virtio-net-pci,netdev=net0' },
    });
    expect(problemsOf(rom)).toEqual([
      '-device virtio-net-pci without romfile=: a destination starts the NIC without an option ROM',
    ]);
  });

  it('wants direct kernel boot and exactly one forwarded port', () => {
    expect(problemsOf(userQemu({ drop: ['-kernel'] }))).toEqual([
      'no -kernel and -initrd: only direct kernel boot is supported (a destination boots the same files)',
    ]);
    const two = userQemu({
      replace: {
        '-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:41097-:7777':
          'user,id=net0,hostfwd=tcp:127.0.0.1:1-:22,hostfwd=tcp:127.0.0.1:2-:80',
      },
    });
    expect(problemsOf(two)).toEqual([
      '-netdev user,id=net0 forwards 2 ports: a destination forwards one (hostfwd=tcp:127.0.0.1:PORT-:GUESTPORT)',
    ]);
    const udp = userQemu({
      replace: {
        '-netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:41097-:7777': 'user,id=net0,hostfwd=udp::53-:53',
      },
    });
    expect(problemsOf(udp)).toEqual(['hostfwd=udp::53-:53: a destination forwards tcp:127.0.0.1:PORT-:GUESTPORT']);
  });
});

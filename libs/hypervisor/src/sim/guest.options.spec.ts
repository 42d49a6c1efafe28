import { describe, expect, it } from 'vitest';
import { GuestConfigError } from '../errors.js';
import { parseByteSize, parseGuestArgs, toGuestArgs, type GuestOptions } from './guest.options.js';
import { parseNbdUri } from './nbd.uri.js';

const base: GuestOptions = {
  vmId: 'vm-1',
  ramFile: '/run/vm-1.ram',
  ramBytes: 128 * 2 ** 20,
  runtimeDir: '/run/wanmig',
  workload: 'db',
  seed: 42,
  diskUri: 'nbd://127.0.0.1:10809/disk',
  servicePort: 0,
  incoming: false,
  parentPid: 1234,
  pageCacheBytes: 2 ** 20,
};

function problems(argv: string[]): string[] {
  try {
    parseGuestArgs(argv);
  } catch (err) {
    expect(err).toBeInstanceOf(GuestConfigError);
    return (err as GuestConfigError).problems;
  }
  return [];
}

describe('guest options', () => {
  it('reads back what toGuestArgs writes', () => {
    const parsed = parseGuestArgs(toGuestArgs(base));
    expect(parsed).toMatchObject(base);
    expect(parsed.disk).toEqual({ target: { host: '127.0.0.1', port: 10809 }, exportName: 'disk' });
    const incoming = parseGuestArgs(toGuestArgs({ ...base, incoming: true, diskUri: undefined, parentPid: undefined }));
    expect(incoming.incoming).toBe(true);
    expect(incoming.disk).toBeUndefined();
  });

  it('reads sizes with units', () => {
    expect(parseByteSize('64MiB')).toBe(64 * 2 ** 20);
    expect(parseByteSize('4GiB')).toBe(4 * 2 ** 30);
    expect(parseByteSize('1.5k')).toBe(1500);
    expect(parseByteSize('lots')).toBeNaN();
    expect(
      parseGuestArgs([...toGuestArgs(base).slice(0, 4), '--ram', '64MiB', ...toGuestArgs(base).slice(6)]).ramBytes,
    ).toBe(64 * 2 ** 20);
  });

  it('lists every problem at once', () => {
    const found = problems(['--vm-id', '../x', '--ram', '1GB', '--workload', 'gaming', '--bogus', '--seed', '-1']);
    expect(found).toEqual(
      expect.arrayContaining([
        'unknown argument "--bogus"',
        '--ram-file is required',
        '--runtime-dir is required',
        expect.stringMatching(/^vm id "..\/x"/),
        expect.stringMatching(/^--ram: RAM size must be a multiple of 4096/),
        expect.stringMatching(/^--workload must be one of idle, web, db, write-heavy/),
        expect.stringMatching(/^--seed must be an integer/),
      ]),
    );
  });

  it('keeps RAM within 64 MiB..4 GiB', () => {
    const withRam = (ram: string) => [...toGuestArgs(base).slice(0, 4), '--ram', ram, ...toGuestArgs(base).slice(6)];
    expect(problems(withRam('32MiB'))).toEqual([expect.stringMatching(/within 64 MiB..4 GiB/)]);
    expect(problems(withRam('5GiB'))).toEqual([expect.stringMatching(/within 64 MiB..4 GiB/)]);
    expect(problems(withRam('4GiB'))).toEqual([]);
  });

  it('needs no workload when incoming', () => {
    const args = ['--vm-id', 'v', '--ram-file', '/r', '--ram', '64MiB', '--runtime-dir', '/d', '--incoming'];
    expect(parseGuestArgs(args).incoming).toBe(true);
    expect(problems(args.slice(0, -1))).toEqual(['--workload is required']);
  });
});

describe('NBD URIs', () => {
  it('reads nbd:// and nbd+unix://', () => {
    expect(parseNbdUri('nbd://127.0.0.1:10900/vm%20disk')).toEqual({
      target: { host: '127.0.0.1', port: 10900 },
      exportName: 'vm disk',
    });
    expect(parseNbdUri('nbd://localhost')).toEqual({ target: { host: 'localhost', port: 10809 }, exportName: '' });
    expect(parseNbdUri('nbd+unix:///disk?socket=/run/nbd.sock')).toEqual({
      target: { path: '/run/nbd.sock' },
      exportName: 'disk',
    });
  });

  it('refuses other schemes and incomplete URIs', () => {
    for (const uri of ['http://x/y', 'nbd+unix:///disk', 'nbd+unix://host/disk?socket=/s', 'nbd:///disk', 'garbage']) {
      expect(parseNbdUri(uri), uri).toHaveProperty('error');
    }
  });
});

import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '@wanmig/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QEMU_SYSTEM_BIN_ENV, findQemuBinary, parseQemuVersion } from './qemu.binary.js';
import { QemuNotFoundError, QemuVersionError } from './qemu.errors.js';

describe('findQemuBinary', () => {
  let dir: string;
  const fakeQemu = async (name: string, versionLine: string) => {
    const path = join(dir, name);
    await writeFile(path, `#!/bin/sh\necho '${versionLine}'\necho 'Copyright (c) 2003-2022'\n`);
    await chmod(path, 0o755);
    return path;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-qemu-bin-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('parses the version line', () => {
    expect(parseQemuVersion('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)')).toEqual({
      major: 7,
      minor: 2,
      micro: 22,
    });
    expect(parseQemuVersion('QEMU emulator version 8.1')).toEqual({ major: 8, minor: 1, micro: 0 });
    expect(parseQemuVersion('something else')).toBeUndefined();
  });

  it('takes QEMU_SYSTEM_BIN over PATH and reads its version', async () => {
    const path = await fakeQemu('qemu-new', 'QEMU emulator version 9.0.1');
    const found = await findQemuBinary({ env: { [QEMU_SYSTEM_BIN_ENV]: path, PATH: '' } });
    expect(found).toEqual({
      path,
      version: { major: 9, minor: 0, micro: 1 },
      versionText: 'QEMU emulator version 9.0.1',
    });
  });

  it('refuses a QEMU older than the minimum, and a missing override, saying what to install', async () => {
    const old = await fakeQemu('qemu-old', 'QEMU emulator version 6.2.0');
    const tooOld = await findQemuBinary({ env: { [QEMU_SYSTEM_BIN_ENV]: old } }).catch((e: unknown) => e);
    expect(tooOld).toBeInstanceOf(QemuVersionError);
    expect((tooOld as Error).message).toMatch(/6\.2\.0 is older than 7\.2\.0.*install qemu-system-x86/);
    const missing = join(dir, 'nowhere');
    const notFound = await findQemuBinary({ env: { [QEMU_SYSTEM_BIN_ENV]: missing } }).catch((e: unknown) => e);
    expect(notFound).toBeInstanceOf(QemuNotFoundError);
    expect(notFound).toMatchObject({ code: ErrorCode.Unavailable, searched: [missing] });
    expect((notFound as Error).message).toContain('install qemu-system-x86 (deploy/bootstrap.sh does)');
  });
});

import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { delimiter, isAbsolute, join } from 'node:path';
import { QemuNotFoundError, QemuVersionError } from './qemu.errors.js';

export const QEMU_SYSTEM_BIN_ENV = 'QEMU_SYSTEM_BIN';
export const QEMU_SYSTEM_BIN_NAME = 'qemu-system-x86_64';
/**
 * The oldest QEMU this code runs: Debian 12's 7.2. Live migration of a TCG guest needs
 * TCG_MIGRATION_MIN_QEMU_VERSION (the tests run bookworm-backports' 10.0, which deploy/bootstrap.sh installs).
 */
export const MIN_QEMU_VERSION: QemuVersionNumber = { major: 7, minor: 2, micro: 0 };
/**
 * Before QEMU 9.0 a TCG guest loses writes in live migration: the dirty-bitmap sync clears the migration bits 64
 * pages at a time without resetting TCG's TLB, so stores through entries it left writable are never marked dirty
 * and the destination keeps the page as last sent (QEMU commit 03bfc2188f, "physmem: Fix migration dirty bitmap
 * coherency with TCG memory access"). KVM keeps its own dirty log and is not affected.
 */
export const TCG_MIGRATION_MIN_QEMU_VERSION: QemuVersionNumber = { major: 9, minor: 0, micro: 0 };
const VERSION_TIMEOUT_MS = 10_000;
/** Searched after PATH, for services started with a bare environment. */
const FALLBACK_DIRS = ['/usr/bin', '/usr/local/bin'];

export interface QemuVersionNumber {
  major: number;
  minor: number;
  micro: number;
}

export interface QemuBinary {
  path: string;
  version: QemuVersionNumber;
  /** The first line of `--version`, e.g. `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`. */
  versionText: string;
}

export interface FindQemuOptions {
  /** The environment to read QEMU_SYSTEM_BIN and PATH from (process.env). */
  env?: NodeJS.ProcessEnv;
  minVersion?: QemuVersionNumber;
}

const cache = new Map<string, Promise<QemuBinary>>();

/**
 * Finds `qemu-system-x86_64` (QEMU_SYSTEM_BIN if set, else PATH, else /usr/bin and /usr/local/bin) and checks
 * `--version` against `minVersion`. QemuNotFoundError or QemuVersionError otherwise. Found binaries are cached
 * per path and minimum version for the life of the process.
 */
export async function findQemuBinary(options: FindQemuOptions = {}): Promise<QemuBinary> {
  const env = options.env ?? process.env;
  const minVersion = options.minVersion ?? MIN_QEMU_VERSION;
  const path = await locate(env);
  const key = `${path}\0${formatQemuVersion(minVersion)}`;
  let found = cache.get(key);
  if (!found) {
    found = checkVersion(path, minVersion);
    cache.set(key, found);
    found.catch(() => cache.delete(key));
  }
  return found;
}

/** `7.2.22` from `QEMU emulator version 7.2.22 (Debian ...)`; undefined when there is no version in the text. */
export function parseQemuVersion(text: string): QemuVersionNumber | undefined {
  const m = /version (\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), micro: Number(m[3] ?? 0) };
}

export function compareQemuVersions(a: QemuVersionNumber, b: QemuVersionNumber): number {
  return a.major - b.major || a.minor - b.minor || a.micro - b.micro;
}

export function formatQemuVersion(v: QemuVersionNumber): string {
  return `${v.major}.${v.minor}.${v.micro}`;
}

async function locate(env: NodeJS.ProcessEnv): Promise<string> {
  const override = env[QEMU_SYSTEM_BIN_ENV];
  if (override) {
    if (!isAbsolute(override)) {
      throw new QemuNotFoundError(`${QEMU_SYSTEM_BIN_ENV}=${override} is not an absolute path`, [override]);
    }
    if (!(await isExecutable(override))) {
      throw new QemuNotFoundError(`${QEMU_SYSTEM_BIN_ENV}=${override} is not an executable file`, [override]);
    }
    return override;
  }
  const dirs = [...new Set([...(env.PATH ?? '').split(delimiter).filter(isAbsolute), ...FALLBACK_DIRS])];
  for (const dir of dirs) {
    const candidate = join(dir, QEMU_SYSTEM_BIN_NAME);
    if (await isExecutable(candidate)) return candidate;
  }
  throw new QemuNotFoundError(`${QEMU_SYSTEM_BIN_NAME} is not installed (searched ${dirs.join(delimiter)})`, dirs);
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function checkVersion(path: string, minVersion: QemuVersionNumber): Promise<QemuBinary> {
  return new Promise((resolve, reject) => {
    execFile(path, ['--version'], { timeout: VERSION_TIMEOUT_MS }, (err, stdout, stderr) => {
      const text = `${stdout}${stderr}`.trim();
      if (err) {
        reject(new QemuNotFoundError(`${path} --version failed: ${err.message}`, [path], { cause: err }));
        return;
      }
      const version = parseQemuVersion(text);
      if (!version) {
        reject(new QemuVersionError(path, text, 'no version in its --version output'));
        return;
      }
      if (compareQemuVersions(version, minVersion) < 0) {
        const reason = `version ${formatQemuVersion(version)} is older than ${formatQemuVersion(minVersion)}`;
        reject(new QemuVersionError(path, text, reason));
        return;
      }
      resolve({ path, version, versionText: text.split('\n')[0] });
    });
  });
}

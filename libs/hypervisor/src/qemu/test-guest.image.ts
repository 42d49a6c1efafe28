import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { kernelAppend } from './kernel.append.js';
import { GuestImageError } from './qemu.errors.js';

/**
 * The test guest, the guest a site launches for `vm.create` with driver `qemu` and guest `test`, and the one QEMU
 * tests boot (test/guest/build-guest.sh): the Debian kernel, a busybox initramfs whose workload keeps a hot set in
 * RAM, writes its disk gently (fsync'ed) and serves an in-memory counter on TCP port GUEST_SERVICE_PORT (`COUNTER
 * <n>\n` per connection), and a 2 GiB raw ext4 disk holding a Debian base system.
 */

export const GUEST_CACHE_ENV = 'WANMIG_GUEST_CACHE';
export const DEFAULT_GUEST_CACHE_DIR = '/var/cache/wanmig/guest';
export const GUEST_READY_MARKER = 'wanmig-guest: ready';
export const GUEST_FAILED_MARKER = 'wanmig-guest: FAILED';
/** Files the guest's workload keeps on its disk. */
export const GUEST_DISK_COUNTER_FILE = '/wanmig/counter';
export const GUEST_DISK_CHURN_FILE = '/wanmig/churn.bin';
export const DEFAULT_GUEST_BUILD_TIMEOUT_MS = 20 * 60_000;
/** In the repository: found from this file upwards, so from src/ and from dist/ alike. */
const BUILD_SCRIPT = 'test/guest/build-guest.sh';
const LOG_TAIL_LINES = 20;

export interface GuestImage {
  kernel: string;
  initrd: string;
  /** The pristine cached disk: boot a copy, never this file. */
  disk: string;
  cacheDir: string;
  kernelVersion: string;
}

/** The guest's workload knobs, on its kernel command line (its own defaults when absent). */
export interface GuestWorkload {
  /** Size of the hot set in MiB (32; 0 = none). */
  hotMiB?: number;
  /** KiB written to the disk per second (256). */
  diskKiB?: number;
}

/** The test guest's kernel command line. */
export function testGuestAppend(workload: GuestWorkload = {}): string {
  return kernelAppend({ quiet: true, hotMiB: workload.hotMiB, diskKiB: workload.diskKiB });
}

export function guestCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env[GUEST_CACHE_ENV] || DEFAULT_GUEST_CACHE_DIR);
}

/** The image's paths in `cacheDir` (built or not). */
export function guestImageAt(cacheDir: string = guestCacheDir()): GuestImage {
  const versionFile = join(cacheDir, 'kernel-version');
  return {
    kernel: join(cacheDir, 'vmlinuz'),
    initrd: join(cacheDir, 'initramfs.cpio.gz'),
    disk: join(cacheDir, 'disk.img'),
    cacheDir,
    kernelVersion: existsSync(versionFile) ? readFileSync(versionFile, 'utf8').trim() : '',
  };
}

export interface EnsureGuestImageOptions {
  cacheDir?: string;
  timeoutMs?: number;
  /** Where the build's progress lines go; default process.stderr. */
  log?: (line: string) => void;
  /** Called with the build script's pid once it is spawned (e.g. to kill it should this process die). */
  onSpawn?: (pid: number) => void;
}

const builds = new Map<string, Promise<GuestImage>>();

/**
 * Runs test/guest/build-guest.sh (a no-op when its cache is current; the first build debootstraps Debian) and
 * returns the image's paths. Concurrent calls in one process share one build; the script locks across processes.
 * Rejects with GuestImageError.
 */
export function ensureGuestImage(options: EnsureGuestImageOptions = {}): Promise<GuestImage> {
  const cacheDir = resolve(options.cacheDir ?? guestCacheDir());
  let build = builds.get(cacheDir);
  if (!build) {
    build = runBuildScript(cacheDir, options);
    builds.set(cacheDir, build);
    build.catch(() => builds.delete(cacheDir));
  }
  return build;
}

async function runBuildScript(cacheDir: string, options: EnsureGuestImageOptions): Promise<GuestImage> {
  const script = findBuildScript(cacheDir);
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const timeoutMs = options.timeoutMs ?? DEFAULT_GUEST_BUILD_TIMEOUT_MS;
  const tail: string[] = [];
  // Its own process group, so that a timeout also stops debootstrap and whatever it runs.
  const child = spawn('bash', [script], {
    env: { ...process.env, [GUEST_CACHE_ENV]: cacheDir },
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  if (child.pid !== undefined) options.onSpawn?.(child.pid);
  let pending = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (pending + chunk).split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      log(line);
      tail.push(line);
      if (tail.length > LOG_TAIL_LINES) tail.shift();
    }
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child, 'SIGKILL');
  }, timeoutMs);
  try {
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolveExit, reject) => {
      child.once('error', reject);
      child.once('close', (c: number | null, s: NodeJS.Signals | null) => resolveExit([c, s]));
    });
    if (pending) tail.push(pending);
    if (timedOut) throw new GuestImageError(cacheDir, `${script} timed out after ${timeoutMs} ms`, tail.join('\n'));
    if (code !== 0) {
      throw new GuestImageError(cacheDir, `${script} failed (${signal ?? `exit ${code}`})`, tail.join('\n'));
    }
  } catch (err) {
    if (err instanceof GuestImageError) throw err;
    throw new GuestImageError(cacheDir, `cannot run ${script}`, tail.join('\n'), { cause: err });
  } finally {
    clearTimeout(timer);
  }
  return guestImageAt(cacheDir);
}

function findBuildScript(cacheDir: string): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const candidate = join(dir, BUILD_SCRIPT);
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) throw new GuestImageError(cacheDir, `${BUILD_SCRIPT} not found`, '');
  }
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    child.kill(signal);
  }
}

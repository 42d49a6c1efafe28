import { constants } from 'node:fs';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelAppend } from './kernel.append.js';
import { QemuConfigError } from './qemu.errors.js';
import { QemuProcess, type QemuExit } from './qemu.process.js';

export const Accelerator = { Kvm: 'kvm', Tcg: 'tcg' } as const;
export type Accelerator = (typeof Accelerator)[keyof typeof Accelerator];

export const DEFAULT_MARKER_BOOT_RAM_MIB = 128;
const POLL_MS = 100;
const STOP_TIMEOUT_MS = 4000;

export interface MarkerBootOptions {
  accel: Accelerator;
  /** A bzImage, e.g. /boot/vmlinuz-6.1.0-…-amd64. */
  kernel: string;
  initrd: string;
  /** Words after DEFAULT_QEMU_APPEND on the kernel command line. */
  appendExtra?: string;
  /** Text the guest prints on its serial console once it runs its init; not in `appendExtra`. */
  marker: string;
  timeoutMs: number;
  ramMiB?: number;
  qemuBin?: string;
  onSpawn?: (pid: number) => void;
}

export interface MarkerBootResult {
  /** The marker appeared on the serial console within the time allowed. */
  seen: boolean;
  /** From spawning QEMU to the marker (or to giving up). */
  ms: number;
  /** QEMU's exit when it exited on its own before the end (guest powered off, or QEMU failed). */
  exit?: QemuExit;
  serialTail: string;
  stderrTail: string;
}

/**
 * Boots `kernel` + `initrd` with no devices but a serial console written to a file, and waits for `marker` on it.
 * QEMU is always gone when this resolves. Rejects with QemuConfigError (unreadable kernel or initrd) or
 * QemuStartError (QEMU did not start: e.g. the accelerator could not be initialised).
 */
export async function bootUntilMarker(o: MarkerBootOptions): Promise<MarkerBootResult> {
  await checkReadable(o);
  const dir = await mkdtemp(join(tmpdir(), 'wanmig-boot-'));
  const serialFile = join(dir, 'serial.log');
  const t0 = performance.now();
  try {
    const qemu = await QemuProcess.start({
      name: `marker-boot-${o.accel}`,
      qmpSocket: join(dir, 'qmp.sock'),
      readyTimeoutMs: o.timeoutMs,
      qemuBin: o.qemuBin,
      onSpawn: o.onSpawn,
      args: [
        ...['-accel', o.accel, '-m', String(o.ramMiB ?? DEFAULT_MARKER_BOOT_RAM_MIB)],
        ...['-nodefaults', '-display', 'none', '-no-reboot', '-serial', `file:${serialFile}`],
        ...['-kernel', o.kernel, '-initrd', o.initrd],
        ...['-append', kernelAppend({ extra: o.appendExtra ? [o.appendExtra] : [] })],
      ],
    });
    const deadline = t0 + o.timeoutMs;
    let serial = '';
    for (;;) {
      const exit = qemu.exit; // read before the serial file, so that a guest that printed and powered off is seen
      serial = await readFile(serialFile, 'utf8').catch(() => '');
      const seen = serial.includes(o.marker);
      if (seen || exit || performance.now() >= deadline) {
        const ms = Math.round(performance.now() - t0);
        await qemu.stop(STOP_TIMEOUT_MS);
        return { seen, ms, exit, serialTail: tail(serial), stderrTail: qemu.stderrTail() };
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function checkReadable(o: MarkerBootOptions): Promise<void> {
  const problems: string[] = [];
  if (!o.marker) problems.push('marker is empty');
  // The kernel echoes its command line to the console: a marker found there would prove nothing.
  else if (o.appendExtra?.includes(o.marker)) problems.push('the kernel command line contains the marker');
  for (const [what, path] of [
    ['kernel', o.kernel],
    ['initrd', o.initrd],
  ] as const) {
    await access(path, constants.R_OK).catch(() => problems.push(`${what} ${path} is not readable`));
  }
  if (problems.length > 0) throw new QemuConfigError(problems);
}

function tail(text: string, lines = 10): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

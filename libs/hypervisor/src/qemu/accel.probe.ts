import { open } from 'node:fs/promises';
import { QemuStartError } from './qemu.errors.js';
import { Accelerator, bootUntilMarker } from './marker.boot.js';

export const DEFAULT_ACCEL_PROBE_TIMEOUT_MS = 20_000;
export const KVM_DEVICE = '/dev/kvm';

export interface AccelProbeOptions {
  kernel: string;
  initrd: string;
  appendExtra?: string;
  /** Printed by the guest's init on the serial console (`console=ttyS0`). */
  marker: string;
  /** How long the guest under KVM gets to print the marker. */
  timeoutMs?: number;
  qemuBin?: string;
  /** The KVM device to try to open (KVM_DEVICE). */
  kvmDevice?: string;
  onSpawn?: (pid: number) => void;
}

export interface AccelProbeResult {
  accel: Accelerator;
  /** Why, in words fit for a log line. */
  reason: string;
  /** How long the guest under KVM took to print the marker, when it did. */
  kvmMs?: number;
}

let cached: Promise<AccelProbeResult> | undefined;

/**
 * KVM if a guest booted under it reaches its marker, TCG otherwise: on some hosts /dev/kvm opens and VMs are
 * created but a guest makes no progress, so opening the device proves nothing. The first call's result is
 * kept for the life of the process (later calls get it whatever their options); a probe that throws (unreadable
 * kernel or initrd, no QEMU) is not kept.
 */
export function probeAccelerator(o: AccelProbeOptions): Promise<AccelProbeResult> {
  if (!cached) {
    const probe = runProbe(o);
    cached = probe;
    probe.catch(() => {
      if (cached === probe) cached = undefined;
    });
  }
  return cached;
}

/** Drops the kept result, so that the next probeAccelerator() probes again. */
export function forgetAcceleratorProbe(): void {
  cached = undefined;
}

async function runProbe(o: AccelProbeOptions): Promise<AccelProbeResult> {
  const device = o.kvmDevice ?? KVM_DEVICE;
  try {
    const handle = await open(device, 'r+');
    await handle.close();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    return { accel: Accelerator.Tcg, reason: `${device} cannot be opened (${code})` };
  }
  const timeoutMs = o.timeoutMs ?? DEFAULT_ACCEL_PROBE_TIMEOUT_MS;
  let boot;
  try {
    boot = await bootUntilMarker({ ...o, accel: Accelerator.Kvm, timeoutMs });
  } catch (err) {
    if (!(err instanceof QemuStartError)) throw err;
    return { accel: Accelerator.Tcg, reason: `QEMU does not start under KVM: ${err.message}` };
  }
  if (boot.seen) {
    return { accel: Accelerator.Kvm, reason: `a guest under KVM reached its marker in ${boot.ms} ms`, kvmMs: boot.ms };
  }
  if (boot.exit) {
    const how = boot.exit.signal ? `was killed by ${boot.exit.signal}` : `exited ${boot.exit.code}`;
    const stderr = boot.stderrTail.trim() ? `: ${boot.stderrTail.trim()}` : '';
    return { accel: Accelerator.Tcg, reason: `QEMU under KVM ${how} before the guest's marker${stderr}` };
  }
  const seconds = Math.round(timeoutMs / 100) / 10;
  return { accel: Accelerator.Tcg, reason: `KVM opens but the guest made no progress in ${seconds} s` };
}

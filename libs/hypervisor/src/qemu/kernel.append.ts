/**
 * The kernel command line (`-append`) of the guests wanmig boots. Every one has its console on the first serial port
 * (QEMU writes it to a file) and `panic=-1` (a panic reboots at once, which `-no-reboot` turns into QEMU's exit);
 * the test guest (test/guest/build-guest.sh) boots `quiet` and reads its workload's knobs from here too.
 */
export interface KernelAppendOptions {
  /** No kernel boot messages on the console. */
  quiet?: boolean;
  /** The test guest's hot set in MiB, `wanmig.hot_mib=` (the guest's default 32; 0 = none). */
  hotMiB?: number;
  /** KiB the test guest writes to its disk per second, `wanmig.disk_kib=` (the guest's default 256). */
  diskKiB?: number;
  /** Further words as they are, e.g. `wanmig.ip=10.0.0.5/24`. */
  extra?: string[];
}

export function kernelAppend(o: KernelAppendOptions = {}): string {
  const words = ['console=ttyS0', ...(o.quiet ? ['quiet'] : []), 'panic=-1'];
  if (o.hotMiB !== undefined) words.push(`wanmig.hot_mib=${o.hotMiB}`);
  if (o.diskKiB !== undefined) words.push(`wanmig.disk_kib=${o.diskKiB}`);
  return [...words, ...(o.extra ?? [])].join(' ');
}

/** The kernel command line when a spec gives none. */
export const DEFAULT_QEMU_APPEND = kernelAppend();

/** Bytes per guest page: the dirty log's granularity and the unit of every RAM write. */
export const SIM_PAGE_SIZE = 4096;
export const MIN_RAM_BYTES = 64 * 2 ** 20;
export const MAX_RAM_BYTES = 4 * 2 ** 30;
/** The in-process page cache holds at most this much RAM by default (the RAM file is the truth). */
export const DEFAULT_PAGE_CACHE_BYTES = 256 * 2 ** 20;
/** `DISK <block>` hashes blocks of this size. */
export const SERVICE_DISK_BLOCK = 64 * 1024;
/** A vm id becomes a file name in the runtime directory. */
export const VM_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** The first stdout line of a guest that is up, followed by a JSON `GuestReadyInfo`. */
export const GUEST_READY_PREFIX = 'WANMIG_SIM_GUEST_READY ';
/** Base tick of the guest's main loop (the counter advances once per tick). */
export const BASE_TICK_MS = 1;
/** Highest throttle: the guest keeps 1 % of its speed, as QEMU's auto-converge does at most. */
export const MAX_THROTTLE_PERCENT = 99;
/** Longest unix socket path Linux accepts (sun_path is 108 bytes with the terminating NUL). */
export const MAX_SOCKET_PATH = 107;

export const SimWorkload = {
  Idle: 'idle',
  Web: 'web',
  Db: 'db',
  WriteHeavy: 'write-heavy',
} as const;
export type SimWorkload = (typeof SimWorkload)[keyof typeof SimWorkload];
export const SIM_WORKLOADS: readonly SimWorkload[] = Object.values(SimWorkload);

export function isSimWorkload(value: unknown): value is SimWorkload {
  return typeof value === 'string' && (SIM_WORKLOADS as readonly string[]).includes(value);
}

/** A size, rate or duration that could not be read: a usage mistake, shown as one line. */
export class UnitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnitError';
  }
}

/**
 * Sizes as the virtualisation tools read them (qemu-img, truncate, nbdkit): a bare `K`, `M`, `G`, `T` and `KiB`,
 * `MiB`, `GiB`, `TiB` are powers of 1024 (`256M` is 256 MiB); `kB`, `MB`, `GB`, `TB` powers of 1000.
 */
const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
};

/** "512MiB", "512M" (the same), "1GB" (10⁹), "4096" -> bytes. */
export function parseSize(text: string, what = 'size'): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined)
    throw new UnitError(`${what}: cannot read ${JSON.stringify(text)} (try 512MiB or 2GiB)`);
  return Math.round(Number(m[1]) * unit);
}

const RATE_UNITS: Record<string, number> = {
  bit: 1,
  bps: 1,
  kbit: 1e3,
  mbit: 1e6,
  gbit: 1e9,
  kbps: 1e3,
  mbps: 1e6,
  gbps: 1e9,
};

/** "200mbit", "1gbit", "0" (unlimited) -> bits per second. */
export function parseBitRate(text: string, what = 'bandwidth'): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z/]*)$/i.exec(text.trim());
  const unit = m ? (m[2] === '' ? 1e6 : RATE_UNITS[m[2].toLowerCase().replace('/s', 'bps')]) : undefined;
  if (!m || unit === undefined) throw new UnitError(`${what}: cannot read ${JSON.stringify(text)} (try 200mbit)`);
  return Number(m[1]) * unit;
}

/** "50ms", "10s", "50" (ms) -> milliseconds. */
export function parseDuration(text: string, what = 'duration'): number {
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m)?$/i.exec(text.trim());
  if (!m) throw new UnitError(`${what}: cannot read ${JSON.stringify(text)} (try 50ms or 10s)`);
  const scale = { ms: 1, s: 1000, m: 60_000 }[(m[2] ?? 'ms').toLowerCase() as 'ms' | 's' | 'm'];
  return Number(m[1]) * scale;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return `${value.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

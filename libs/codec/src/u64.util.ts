/** Big-endian u64 fields as JS numbers; offsets stay below 2^53 (8 PiB), checked on read and write. */
export function writeU64(buf: Buffer, at: number, value: number): void {
  buf.writeUInt32BE(Math.floor(value / 2 ** 32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

/** Reads a u64; returns -1 when it does not fit a safe integer so callers can reject it. */
export function readU64(buf: Buffer, at: number): number {
  const hi = buf.readUInt32BE(at);
  if (hi >= 2 ** 21) return -1;
  return hi * 2 ** 32 + buf.readUInt32BE(at + 4);
}

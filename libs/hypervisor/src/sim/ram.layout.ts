import { SIM_PAGE_SIZE } from './sim.constants.js';

/**
 * Page 0 of guest RAM holds the guest's identity and its counter; pages 1..16 hold the key-value
 * area the service answers GET from. The workload never writes these with page content. Everything
 * is little-endian, as a guest's own memory would be.
 *
 *   0  8  magic 'WMSIMRAM'      24 u32 seed
 *   8  u32 layout version (1)   28 u32 flags (bit 0: RAM filled with the boot content)
 *  12  u32 page size            32 u64 counter
 *  16  u64 RAM bytes
 */
export const RAM_MAGIC = Buffer.from('WMSIMRAM', 'latin1');
export const RAM_LAYOUT_VERSION = 1;
export const RAM_HEADER_BYTES = 40;
export const COUNTER_OFFSET = 32;
export const RamFlag = { Filled: 1 } as const;

export const KV_FIRST_PAGE = 1;
export const KV_SLOT_BYTES = 256;
export const KV_KEYS = 256;
export const KV_PAGES = (KV_KEYS * KV_SLOT_BYTES) / SIM_PAGE_SIZE;
/** Pages the workload leaves alone (header and key-value area). */
export const RESERVED_PAGES = KV_FIRST_PAGE + KV_PAGES;
/** Slot: u32 version, u16 length, then the value (UTF-8). */
const KV_SLOT_HEADER = 6;
export const KV_MAX_VALUE_BYTES = KV_SLOT_BYTES - KV_SLOT_HEADER;

export interface RamHeader {
  pageSize: number;
  ramBytes: number;
  seed: number;
  flags: number;
  counter: number;
}

export function encodeRamHeader(header: RamHeader): Buffer {
  const out = Buffer.alloc(RAM_HEADER_BYTES);
  RAM_MAGIC.copy(out, 0);
  out.writeUInt32LE(RAM_LAYOUT_VERSION, 8);
  out.writeUInt32LE(header.pageSize, 12);
  out.writeBigUInt64LE(BigInt(header.ramBytes), 16);
  out.writeUInt32LE(header.seed >>> 0, 24);
  out.writeUInt32LE(header.flags >>> 0, 28);
  out.writeBigUInt64LE(BigInt(header.counter), COUNTER_OFFSET);
  return out;
}

/** The header page 0 holds, or undefined when it holds none (not a sim guest's RAM). */
export function decodeRamHeader(page0: Buffer): RamHeader | undefined {
  if (page0.length < RAM_HEADER_BYTES || !page0.subarray(0, 8).equals(RAM_MAGIC)) return undefined;
  if (page0.readUInt32LE(8) !== RAM_LAYOUT_VERSION) return undefined;
  return {
    pageSize: page0.readUInt32LE(12),
    ramBytes: Number(page0.readBigUInt64LE(16)),
    seed: page0.readUInt32LE(24),
    flags: page0.readUInt32LE(28),
    counter: Number(page0.readBigUInt64LE(COUNTER_OFFSET)),
  };
}

export function encodeCounter(counter: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64LE(BigInt(counter));
  return out;
}

/** `k0`..`k255` → slot index; undefined for any other key. */
export function kvKeyIndex(key: string): number | undefined {
  const m = /^k(0|[1-9]\d{0,2})$/.exec(key);
  const index = m ? Number(m[1]) : NaN;
  return index < KV_KEYS ? index : undefined;
}

export function kvKeyName(index: number): string {
  return `k${index}`;
}

export function kvSlotOffset(index: number): number {
  return KV_FIRST_PAGE * SIM_PAGE_SIZE + index * KV_SLOT_BYTES;
}

export function encodeKvSlot(version: number, value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > KV_MAX_VALUE_BYTES) throw new RangeError(`value of ${bytes.length} bytes does not fit a slot`);
  const out = Buffer.alloc(KV_SLOT_BYTES);
  out.writeUInt32LE(version >>> 0, 0);
  out.writeUInt16LE(bytes.length, 4);
  bytes.copy(out, KV_SLOT_HEADER);
  return out;
}

export function decodeKvSlot(slot: Buffer): { version: number; value: string } {
  const length = Math.min(slot.readUInt16LE(4), KV_MAX_VALUE_BYTES);
  return { version: slot.readUInt32LE(0), value: slot.toString('utf8', KV_SLOT_HEADER, KV_SLOT_HEADER + length) };
}

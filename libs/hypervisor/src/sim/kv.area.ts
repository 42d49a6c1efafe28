import { type Rng } from '@wanmig/codec';
import { type GuestRam } from './guest.ram.js';
import {
  KV_KEYS,
  decodeKvSlot,
  encodeKvSlot,
  kvKeyIndex,
  kvKeyName,
  kvSlotOffset,
  KV_SLOT_BYTES,
} from './ram.layout.js';

/** The key-value area in guest RAM: 256 keys `k0`..`k255`, one 256-byte slot each. */
export class KvArea {
  constructor(private readonly ram: GuestRam) {}

  /** The value of `key`, or undefined for a key outside the area. */
  get(key: string): string | undefined {
    const index = kvKeyIndex(key);
    if (index === undefined) return undefined;
    const offset = kvSlotOffset(index);
    return decodeKvSlot(this.ram.bytes(offset, KV_SLOT_BYTES)).value;
  }

  /** Writes a key's initial value (version 0) at boot. */
  init(index: number, value: string): void {
    this.ram.writeBytes(kvSlotOffset(index), encodeKvSlot(0, value));
  }

  /** One update drawn from `rng`: a key, and a new value that names its version. */
  update(rng: Rng, tag: string): void {
    const index = rng.int(KV_KEYS);
    const offset = kvSlotOffset(index);
    const { version } = decodeKvSlot(this.ram.bytes(offset, KV_SLOT_BYTES));
    const next = version + 1;
    this.ram.writeBytes(offset, encodeKvSlot(next, kvValue(rng, tag, index, next)));
  }
}

/** `<tag>-<key>-v<version>-<8 hex digits>`, e.g. `db-k17-v42-9f3a0c11`. */
export function kvValue(rng: Rng, tag: string, index: number, version: number): string {
  return `${tag}-${kvKeyName(index)}-v${version}-${rng.u32().toString(16).padStart(8, '0')}`;
}

import { isZero, mixedDataset, type DatasetMix } from '@wanmig/codec';
import { type GuestRam } from './guest.ram.js';
import { KvArea, kvValue } from './kv.area.js';
import { KV_KEYS, RamFlag, decodeRamHeader, encodeRamHeader } from './ram.layout.js';
import { SIM_PAGE_SIZE } from './sim.constants.js';
import { SnapshotRng, streamSeed } from './snapshot.rng.js';
import { SeedStream } from './seed.streams.js';

/** A guest's memory after boot: mostly page cache and heap, a third never touched. */
export const BOOT_MIX: DatasetMix = { zero: 0.35, duplicate: 0.2, text: 0.25, random: 0.2 };
const FILL_CHUNK = 1 << 20;

/** True when the RAM already holds this guest's boot content (same size and seed, fill finished). */
export function ramHoldsGuest(ram: GuestRam, seed: number): boolean {
  const header = decodeRamHeader(ram.page(0));
  return (
    header !== undefined &&
    header.ramBytes === ram.ramBytes &&
    header.pageSize === SIM_PAGE_SIZE &&
    header.seed === seed &&
    (header.flags & RamFlag.Filled) !== 0
  );
}

/**
 * Fills RAM with seeded VM-like content (zero pages left as holes), initialises the key-value area,
 * then writes the header last, so a fill cut short is redone at the next boot.
 */
export function fillRam(ram: GuestRam, seed: number): void {
  ram.clear();
  for (const chunk of mixedDataset({ size: ram.ramBytes, seed, mix: BOOT_MIX, chunkSize: FILL_CHUNK })) {
    if (!isZero(chunk.data)) ram.writePages(chunk.offset / SIM_PAGE_SIZE, chunk.data);
  }
  ram.writePages(0, Buffer.alloc(SIM_PAGE_SIZE));
  const kv = new KvArea(ram);
  const rng = new SnapshotRng(streamSeed(seed, SeedStream.KvInit));
  for (let i = 0; i < KV_KEYS; i++) kv.init(i, kvValue(rng, 'boot', i, 0));
  ram.writeBytes(
    0,
    encodeRamHeader({ pageSize: SIM_PAGE_SIZE, ramBytes: ram.ramBytes, seed, flags: RamFlag.Filled, counter: 0 }),
  );
}

/** The guest's independent random streams, each seeded from the guest seed (`streamSeed`). */
export const SeedStream = {
  RamWrites: 1,
  KvUpdates: 2,
  DiskWrites: 3,
  /** Which pages form the write set: recomputed from the seed, never stored. */
  Layout: 4,
  KvInit: 5,
} as const;
export type SeedStream = (typeof SeedStream)[keyof typeof SeedStream];

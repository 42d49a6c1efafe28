import { fillText, mutatePage } from '@wanmig/codec';
import { type GuestDisk } from './guest.disk.js';
import { type GuestRam } from './guest.ram.js';
import { type KvArea } from './kv.area.js';
import { RESERVED_PAGES } from './ram.layout.js';
import { SeedStream } from './seed.streams.js';
import { SIM_PAGE_SIZE, type SimWorkload } from './sim.constants.js';
import { SnapshotRng, streamSeed } from './snapshot.rng.js';
import { TokenBucket, clampThrottle, throttledRate } from './token.bucket.js';
import { type WorkloadCursor } from './workload.cursor.js';
import { WORKLOAD_PROFILES, type PageWriteMix, type WorkloadProfile } from './workload.profile.js';

/** Write sets are made of aligned groups of this many pages (data structures span neighbouring pages). */
export const WRITE_SET_GROUP_PAGES = 16;
const DISK_MAX_WRITE_PAGES = 16;
const DISK_FUA_EVERY = 8;
const DISK_FLUSH_EVERY = 32;

export interface WorkloadEngineOptions {
  workload: SimWorkload;
  seed: number;
  ram: GuestRam;
  kv: KvArea;
  disk?: GuestDisk;
  /** Continue from a device state; default: start of the seed's streams. */
  cursor?: WorkloadCursor;
  throttlePercent?: number;
}

type PageKindName = keyof PageWriteMix;
const PAGE_KINDS: readonly PageKindName[] = ['mutate', 'text', 'random', 'duplicate', 'zero'];

/**
 * The guest's seeded workload. Each tick it writes RAM pages, updates keys and issues disk writes
 * at the profile's rates (token buckets), scaled down by the throttle. Three independent random
 * streams (RAM, keys, disk) make the sequence of each kind of write a function of the seed alone.
 */
export class WorkloadEngine {
  readonly profile: Readonly<WorkloadProfile>;
  /** Pages the workload writes (sorted), or undefined for "anywhere past the reserved pages". */
  readonly writeSet: Uint32Array | undefined;
  private readonly ramRng: SnapshotRng;
  private readonly kvRng: SnapshotRng;
  private readonly diskRng: SnapshotRng;
  private readonly ramBucket: TokenBucket;
  private readonly kvBucket: TokenBucket;
  private readonly diskBucket: TokenBucket;
  private readonly kindWeights: number[];
  private readonly kindTotal: number;
  private readonly scratch: Buffer;
  private throttle = 0;
  private ticks = 0;
  private pageWrites = 0;
  private kvUpdates = 0;
  private diskWrites = 0;

  constructor(private readonly o: WorkloadEngineOptions) {
    this.profile = WORKLOAD_PROFILES[o.workload];
    const c = o.cursor;
    this.ramRng = c ? SnapshotRng.fromState(c.ramRng) : new SnapshotRng(streamSeed(o.seed, SeedStream.RamWrites));
    this.kvRng = c ? SnapshotRng.fromState(c.kvRng) : new SnapshotRng(streamSeed(o.seed, SeedStream.KvUpdates));
    this.diskRng = c ? SnapshotRng.fromState(c.diskRng) : new SnapshotRng(streamSeed(o.seed, SeedStream.DiskWrites));
    this.ramBucket = new TokenBucket(0, c?.ramTokens ?? 0);
    this.kvBucket = new TokenBucket(0, c?.kvTokens ?? 0);
    this.diskBucket = new TokenBucket(0, c?.diskTokens ?? 0);
    this.ticks = c?.ticks ?? 0;
    this.pageWrites = c?.pageWrites ?? 0;
    this.kvUpdates = c?.kvUpdates ?? 0;
    this.diskWrites = c?.diskWrites ?? 0;
    this.writeSet = buildWriteSet(o.seed, o.ram.pageCount, this.profile.writeSetFraction);
    this.kindWeights = PAGE_KINDS.map((k) => this.profile.pageMix[k]);
    this.kindTotal = this.kindWeights.reduce((a, b) => a + b, 0);
    this.scratch = Buffer.alloc(this.profile.maxRunPages * SIM_PAGE_SIZE);
    this.setThrottle(o.throttlePercent ?? 0);
  }

  get throttlePercent(): number {
    return this.throttle;
  }

  setThrottle(percent: number): void {
    this.throttle = clampThrottle(percent);
    const p = this.profile;
    this.ramBucket.setRate(throttledRate(p.ramBytesPerSecond, this.throttle));
    this.kvBucket.setRate(throttledRate(p.kvUpdatesPerSecond, this.throttle));
    this.diskBucket.setRate(this.o.disk ? throttledRate(p.diskBytesPerSecond, this.throttle) : 0);
  }

  /** After a pause: time that passed while stopped earns nothing. */
  restartClock(nowMs: number): void {
    for (const bucket of [this.ramBucket, this.kvBucket, this.diskBucket]) bucket.restart(nowMs);
  }

  tick(nowMs: number): void {
    this.ticks++;
    this.ramBucket.refill(nowMs);
    while (this.ramBucket.available) this.ramBucket.spend(this.writeRam());
    this.kvBucket.refill(nowMs);
    while (this.kvBucket.available) {
      this.o.kv.update(this.kvRng, this.o.workload);
      this.kvUpdates++;
      this.kvBucket.spend(1);
    }
    const disk = this.o.disk;
    if (disk && disk.sizeBytes >= SIM_PAGE_SIZE) {
      this.diskBucket.refill(nowMs);
      while (this.diskBucket.available && disk.ready) this.diskBucket.spend(this.writeDisk(disk));
    }
  }

  snapshot(): WorkloadCursor {
    return {
      ticks: this.ticks,
      ramRng: this.ramRng.state(),
      kvRng: this.kvRng.state(),
      diskRng: this.diskRng.state(),
      ramTokens: this.ramBucket.tokens,
      kvTokens: this.kvBucket.tokens,
      diskTokens: this.diskBucket.tokens,
      pageWrites: this.pageWrites,
      kvUpdates: this.kvUpdates,
      diskWrites: this.diskWrites,
    };
  }

  /** One write of a run of pages; returns the bytes written. */
  private writeRam(): number {
    const rng = this.ramRng;
    const ram = this.o.ram;
    let first: number;
    let run = 1 + rng.int(this.profile.maxRunPages);
    if (this.writeSet) {
      first = this.writeSet[rng.int(this.writeSet.length)];
      const groupEnd = (Math.floor(first / WRITE_SET_GROUP_PAGES) + 1) * WRITE_SET_GROUP_PAGES;
      run = Math.min(run, groupEnd - first, ram.pageCount - first);
    } else {
      run = Math.min(run, ram.pageCount - RESERVED_PAGES);
      first = RESERVED_PAGES + rng.int(ram.pageCount - RESERVED_PAGES - run + 1);
    }
    if (run === 1) {
      ram.writePage(first, this.makePage(first, Buffer.allocUnsafe(SIM_PAGE_SIZE)));
    } else {
      const data = this.scratch.subarray(0, run * SIM_PAGE_SIZE);
      for (let i = 0; i < run; i++) this.makePage(first + i, data.subarray(i * SIM_PAGE_SIZE, (i + 1) * SIM_PAGE_SIZE));
      ram.writePages(first, data);
    }
    this.pageWrites += run;
    return run * SIM_PAGE_SIZE;
  }

  /** The next content of page `n`, written into `out` (which it returns). */
  private makePage(n: number, out: Buffer): Buffer {
    const rng = this.ramRng;
    const ram = this.o.ram;
    switch (this.pickKind()) {
      case 'mutate':
        mutatePage(rng, ram.page(n), this.profile.mutateFraction).copy(out);
        break;
      case 'text':
        fillText(rng, out);
        break;
      case 'random':
        rng.fill(out);
        break;
      case 'duplicate':
        ram.page(RESERVED_PAGES + rng.int(ram.pageCount - RESERVED_PAGES)).copy(out);
        break;
      case 'zero':
        out.fill(0);
        break;
    }
    return out;
  }

  private pickKind(): PageKindName {
    let r = this.ramRng.float() * this.kindTotal;
    for (let i = 0; i < PAGE_KINDS.length; i++) {
      r -= this.kindWeights[i];
      if (r < 0) return PAGE_KINDS[i];
    }
    return PAGE_KINDS[PAGE_KINDS.length - 1];
  }

  private writeDisk(disk: GuestDisk): number {
    const rng = this.diskRng;
    const diskPages = Math.floor(disk.sizeBytes / SIM_PAGE_SIZE);
    const pages = Math.min(1 + rng.int(DISK_MAX_WRITE_PAGES), diskPages);
    const offset = rng.int(diskPages - pages + 1) * SIM_PAGE_SIZE;
    const data = Buffer.allocUnsafe(pages * SIM_PAGE_SIZE);
    if (rng.float() < 0.5) fillText(rng, data);
    else rng.fill(data);
    this.diskWrites++;
    disk.write(offset, data, this.diskWrites % DISK_FUA_EVERY === 0);
    if (this.diskWrites % DISK_FLUSH_EVERY === 0) disk.flush();
    return data.length;
  }
}

/**
 * The write set for a seed: aligned groups of WRITE_SET_GROUP_PAGES pages past the reserved ones,
 * each taken with probability `fraction` (at least one group). Undefined when the workload writes
 * anywhere (fraction ≥ 1); empty for a workload that writes no RAM.
 */
export function buildWriteSet(seed: number, pageCount: number, fraction: number): Uint32Array | undefined {
  if (fraction >= 1) return undefined;
  if (fraction <= 0) return new Uint32Array(0);
  const rng = new SnapshotRng(streamSeed(seed, SeedStream.Layout));
  const firstGroup = Math.ceil(RESERVED_PAGES / WRITE_SET_GROUP_PAGES);
  const groups: number[] = [];
  for (let g = firstGroup; (g + 1) * WRITE_SET_GROUP_PAGES <= pageCount; g++) {
    if (rng.float() < fraction) groups.push(g);
  }
  if (groups.length === 0) groups.push(firstGroup);
  const pages = new Uint32Array(groups.length * WRITE_SET_GROUP_PAGES);
  groups.forEach((g, i) => {
    for (let k = 0; k < WRITE_SET_GROUP_PAGES; k++)
      pages[i * WRITE_SET_GROUP_PAGES + k] = g * WRITE_SET_GROUP_PAGES + k;
  });
  return pages;
}

import { PAGE_SIZE } from '@wanmig/protocol';
import { CodecUsageError } from '../errors.js';
import { createRng, type Rng } from './seeded.rng.js';
import { fillText } from './text.generator.js';

export const PageKind = {
  Zero: 'zero',
  Duplicate: 'duplicate',
  Text: 'text',
  Random: 'random',
} as const;
export type PageKind = (typeof PageKind)[keyof typeof PageKind];

export type DatasetMix = Partial<Record<PageKind, number>>;

/** The mix benchmarks use unless told otherwise. */
export const DEFAULT_MIX: Readonly<Required<DatasetMix>> = { zero: 0.4, duplicate: 0.2, text: 0.2, random: 0.2 };

export interface MixedDatasetOptions {
  /** Total bytes (need not be a multiple of the page size: the last page is then partial). */
  size: number;
  seed?: number;
  /** Fractions of pages by kind; normalised. Default DEFAULT_MIX. */
  mix?: DatasetMix;
  /** Bytes per yielded chunk, a multiple of 4 KiB. Default 64 KiB. */
  chunkSize?: number;
  /** Pages of one kind come in runs of this mean length (real disks hold zero and text in extents). Default 4. */
  meanRunPages?: number;
}

export interface DatasetChunk {
  offset: number;
  data: Buffer;
}

const POOL_PAGES = 2048;

/**
 * Makes pages of each kind. Duplicates copy an earlier text or random page, drawn from a pool that
 * keeps recent pages and a sample of older ones, so copies land both near and far from originals.
 */
export class PageGenerator {
  /** Allocated on first use: 8 MiB a generator of single pages does not need. */
  private pool?: Buffer;
  private pooled = 0;

  constructor(private readonly rng: Rng) {}

  /** One page of the given kind, written into `out` (default: a new page). */
  page(kind: PageKind, out: Buffer = Buffer.alloc(PAGE_SIZE)): Buffer {
    switch (kind) {
      case PageKind.Zero:
        out.fill(0);
        return out;
      case PageKind.Duplicate:
        if (this.pooled === 0) return this.page(PageKind.Text, out);
        return this.copyFromPool(out);
      case PageKind.Text:
        fillText(this.rng, out);
        break;
      case PageKind.Random:
        this.rng.fill(out);
        break;
    }
    this.keep(out);
    return out;
  }

  private copyFromPool(out: Buffer): Buffer {
    const from = this.rng.int(this.pooled) * PAGE_SIZE;
    this.pool?.copy(out, 0, from, from + PAGE_SIZE);
    return out;
  }

  /** Keeps every page until the pool is full, then replaces a random one a quarter of the time. */
  private keep(page: Buffer): void {
    this.pool ??= Buffer.alloc(POOL_PAGES * PAGE_SIZE);
    if (this.pooled < POOL_PAGES) page.copy(this.pool, this.pooled++ * PAGE_SIZE);
    else if (this.rng.float() < 0.25) page.copy(this.pool, this.rng.int(POOL_PAGES) * PAGE_SIZE);
  }
}

/** One page of a kind from a seeded RNG (duplicates need a generator's history: use PageGenerator). */
export function generateMixedPage(rng: Rng, kind: Exclude<PageKind, 'duplicate'>): Buffer {
  const out = Buffer.alloc(PAGE_SIZE);
  if (kind === PageKind.Text) fillText(rng, out);
  else if (kind === PageKind.Random) rng.fill(out);
  return out;
}

/**
 * A copy of `page` with about `fraction` of its bytes changed, in runs of `meanRun` bytes on
 * average (a program updating fields and counters), as XBZRLE sees a page dirtied again.
 */
export function mutatePage(rng: Rng, page: Uint8Array, fraction: number, meanRun = 8): Buffer {
  const out = Buffer.from(page);
  let budget = Math.round(page.length * fraction);
  while (budget > 0) {
    const run = Math.min(budget, 1 + rng.int(meanRun * 2 - 1));
    const at = rng.int(page.length - run + 1);
    for (let i = at; i < at + run; i++) out[i] = (out[i] + 1 + rng.int(255)) & 0xff;
    budget -= run;
  }
  return out;
}

/** A seeded data set yielded chunk by chunk, pages mixed by kind; same options, same bytes. */
export function* mixedDataset(options: MixedDatasetOptions): Generator<DatasetChunk> {
  const chunkSize = options.chunkSize ?? 64 * 1024;
  if (chunkSize <= 0 || chunkSize % PAGE_SIZE !== 0) {
    throw new CodecUsageError(`chunkSize must be a positive multiple of ${PAGE_SIZE}, got ${chunkSize}`);
  }
  const rng = createRng(options.seed ?? 1);
  const pick = kindPicker(rng, options.mix ?? DEFAULT_MIX, options.meanRunPages ?? 4);
  const pages = new PageGenerator(rng);
  const scratch = Buffer.alloc(PAGE_SIZE);
  for (let offset = 0; offset < options.size; offset += chunkSize) {
    const data = Buffer.alloc(Math.min(chunkSize, options.size - offset));
    for (let at = 0; at < data.length; at += PAGE_SIZE) {
      const page = pages.page(pick(), scratch);
      page.copy(data, at, 0, Math.min(PAGE_SIZE, data.length - at));
    }
    yield { offset, data };
  }
}

/** Picks page kinds in runs of geometric length with the given mean, kinds weighted by `mix`. */
function kindPicker(rng: Rng, mix: DatasetMix, meanRun: number): () => PageKind {
  const kinds = (Object.keys(mix) as PageKind[]).filter((k) => (mix[k] ?? 0) > 0);
  const total = kinds.reduce((sum, k) => sum + (mix[k] ?? 0), 0);
  if (kinds.length === 0 || !(total > 0)) throw new CodecUsageError('dataset mix has no positive weight');
  let current: PageKind = kinds[0];
  let left = 0;
  return () => {
    if (left === 0) {
      let r = rng.float() * total;
      current = kinds.find((k) => (r -= mix[k] ?? 0) < 0) ?? kinds[kinds.length - 1];
      left = 1 + Math.floor(-Math.log(1 - rng.float()) * Math.max(0, meanRun - 1));
    }
    left--;
    return current;
  };
}

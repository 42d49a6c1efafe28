import type { BlockExtent, ExportBackend } from '@wanmig/nbd';

/** Puts a write on record before it reaches the image (the activity log); the release follows its dirty mark. */
export interface WriteJournal {
  ensure(offset: number, length: number): Promise<() => void> | (() => void);
}

/**
 * Wraps an export backend: it marks what every write changed (`onApplied`, called as soon as the
 * backend has applied it, never before: a block read for sending after its dirty bit was cleared
 * must either already hold the write or be marked again) and it can freeze writes for the final
 * drain. A frozen gate holds new writes *before* they touch the image, and `freeze()` resolves only
 * once the writes already inside the backend have finished and been marked: from then on the dirty
 * map is complete and the image does not change. With a journal, each write is on record there
 * before it touches the image, so a crash cannot make the dirty map forget it.
 */
export class WriteGate implements ExportBackend {
  private frozen = false;
  private inside = 0;
  private idleWaiters: Array<() => void> = [];
  private thawWaiters: Array<() => void> = [];

  constructor(
    private readonly inner: ExportBackend,
    private readonly onApplied: (offset: number, length: number) => void,
    private readonly journal?: WriteJournal,
  ) {}

  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean | undefined {
    return this.inner.readOnly;
  }
  get multiConn(): boolean | undefined {
    return this.inner.multiConn;
  }
  get isFrozen(): boolean {
    return this.frozen;
  }

  async freeze(): Promise<void> {
    this.frozen = true;
    if (this.inside > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  thaw(): void {
    this.frozen = false;
    for (const wake of this.thawWaiters.splice(0)) wake();
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.inner.read(offset, length);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    return this.mutate(offset, data.length, () => this.inner.write(offset, data, fua));
  }
  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.mutate(offset, length, () => this.inner.trim(offset, length, fua));
  }
  writeZeroes(offset: number, length: number, noHole: boolean, fua: boolean): Promise<void> {
    return this.mutate(offset, length, () => this.inner.writeZeroes(offset, length, noHole, fua));
  }
  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.inner.blockStatus
      ? this.inner.blockStatus(offset, length)
      : Promise.resolve([{ length, flags: 0 }] as BlockExtent[]);
  }
  close(): Promise<void> {
    return this.inner.close?.() ?? Promise.resolve();
  }

  private async mutate(offset: number, length: number, op: () => Promise<void>): Promise<void> {
    while (this.frozen) await new Promise<void>((resolve) => this.thawWaiters.push(resolve));
    // Inside from here: a freeze waits for the journal's sync too, so no write slips past it.
    this.inside++;
    let release: (() => void) | undefined;
    try {
      release = this.journal ? await this.journal.ensure(offset, length) : undefined;
      await op();
    } finally {
      // Marked even when the write failed part way: some of it may have reached the image.
      this.onApplied(offset, length);
      release?.();
      if (--this.inside === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }
}

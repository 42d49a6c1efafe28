interface Holder {
  start: number;
  end: number;
  exclusive: boolean;
  released: Promise<void>;
}

/**
 * Orders overlapping requests on one export by arrival: a writer waits for every earlier overlapping
 * holder, a reader for every earlier overlapping writer. Requests that do not overlap run in
 * parallel. This keeps pipelined read-after-write (and write-after-write) on the same bytes in the
 * order the client sent them, even though replies may go out of order.
 */
export class RangeLock {
  private readonly holders = new Set<Holder>();

  /** Number of current holders and waiters. */
  get size(): number {
    return this.holders.size;
  }

  /** Resolve with a release function once [offset, offset + length) may be used. */
  async acquire(offset: number, length: number, exclusive: boolean): Promise<() => void> {
    const start = offset;
    const end = offset + Math.max(length, 1);
    const waits: Promise<void>[] = [];
    for (const h of this.holders) {
      if (h.start < end && start < h.end && (exclusive || h.exclusive)) waits.push(h.released);
    }
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const holder: Holder = { start, end, exclusive, released };
    this.holders.add(holder);
    if (waits.length > 0) await Promise.all(waits);
    return () => {
      if (this.holders.delete(holder)) release();
    };
  }
}

/**
 * FIFO of items with non-decreasing due times (the {@link LinkScheduler} guarantees the order), so "everything
 * due by now" is always a prefix. A head index instead of Array.shift() keeps dequeuing O(1); the array is
 * compacted once the consumed prefix dominates.
 */
export class DeliveryQueue<T> {
  private items: { dueAt: number; item: T }[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  /** Due time of the head, or undefined when empty. */
  get nextDueAt(): number | undefined {
    return this.head < this.items.length ? this.items[this.head].dueAt : undefined;
  }

  push(dueAt: number, item: T): void {
    const last = this.items[this.items.length - 1];
    if (this.length > 0 && last !== undefined && dueAt < last.dueAt) {
      throw new RangeError(`due times must not decrease (${dueAt} after ${last.dueAt})`);
    }
    this.items.push({ dueAt, item });
  }

  /** Removes and returns every item due at or before `now`, in order. */
  takeDue(now: number): T[] {
    const due: T[] = [];
    while (this.head < this.items.length && this.items[this.head].dueAt <= now) {
      due.push(this.items[this.head].item);
      this.head++;
    }
    this.compact();
    return due;
  }

  clear(): T[] {
    const rest = this.items.slice(this.head).map((entry) => entry.item);
    this.items = [];
    this.head = 0;
    return rest;
  }

  private compact(): void {
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
  }
}

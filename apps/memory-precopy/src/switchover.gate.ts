/**
 * Where a held switchover waits (`holdBeforeResume`): the guest paused, everything durable and checked at the
 * destination, until the caller says go (`open`), aborts (`close`), or the time is up. The first of the three decides
 * and the gate stays so: a go after an abort or a timeout is refused, and an abort after a go too, because the
 * destination may be running the VM by then.
 */
export class SwitchoverGate {
  private outcome?: 'open' | 'closed';
  private closedWith?: Error;
  private waiter?: { resolve: () => void; reject: (err: Error) => void };

  /** Someone waits at the gate and nothing has decided yet. */
  get waiting(): boolean {
    return this.waiter !== undefined && this.outcome === undefined;
  }

  get opened(): boolean {
    return this.outcome === 'open';
  }

  /**
   * Resolves on `open`; rejects with the `close` error (at once when it closed before), or with `onTimeout()` after
   * `timeoutMs`. One waiter only.
   */
  wait(timeoutMs: number, onTimeout: () => Error): Promise<void> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (this.waiter) return Promise.reject(new Error('the switchover gate has a waiter already'));
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => this.close(onTimeout()), timeoutMs);
      this.waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
    });
  }

  /** Go. True when the gate is (now, or already) open; false when nobody waits yet or it closed. */
  open(): boolean {
    if (this.outcome === 'open') return true;
    if (!this.waiting) return false;
    this.outcome = 'open';
    this.waiter!.resolve();
    return true;
  }

  /** No go: the waiter fails with `err` (a later wait too). False when the gate opened already. */
  close(err: Error): boolean {
    if (this.outcome === 'open') return false;
    if (this.outcome === 'closed') return true;
    this.outcome = 'closed';
    this.closedWith = err;
    this.waiter?.reject(err);
    return true;
  }
}

/**
 * Runs async work one at a time per key (a migration id): a prepare racing a retry of itself, or
 * a release, sees the other's finished result instead of half of it. Different keys do not wait.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(work);
    this.tails.set(key, run);
    const forget = (): void => {
      if (this.tails.get(key) === run) this.tails.delete(key);
    };
    run.then(forget, forget);
    return run;
  }

  /** Resolves once the work queued so far, on every key, has settled. */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.tails.values()]);
  }

  /** Keys with work queued or running. */
  get size(): number {
    return this.tails.size;
  }
}

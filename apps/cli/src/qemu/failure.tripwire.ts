/**
 * The first failure among the things a migration depends on (the mirror, the relay, the destination QEMU...),
 * raced against whatever the migration is waiting for, so that a wait never outlives the reason to wait.
 */
export class FailureTripwire {
  private failure: Error | undefined;
  private armed = true;
  private readonly tripped: Promise<never>;
  private reject!: (err: Error) => void;

  constructor() {
    this.tripped = new Promise<never>((_, reject) => (this.reject = reject));
    // Nobody may be waiting when it trips.
    this.tripped.catch(() => undefined);
  }

  get error(): Error | undefined {
    return this.failure;
  }

  /** Records the failure (the first one wins) and fails every guarded wait; ignored once disarmed. */
  fire(err: Error): void {
    if (!this.armed || this.failure) return;
    this.failure = err;
    this.reject(err);
  }

  /** Watches a promise that settles only when something broke: `toError` turns its outcome into the failure. */
  watch<T>(promise: Promise<T>, toError: (outcome: { value?: T; error?: unknown }) => Error | undefined): void {
    promise.then(
      (value) => {
        const err = toError({ value });
        if (err) this.fire(err);
      },
      (error: unknown) => {
        const err = toError({ error });
        if (err) this.fire(err);
      },
    );
  }

  /** From now on nothing trips it: what follows is teardown, which closes the watched things on purpose. */
  disarm(): void {
    this.armed = false;
  }

  /** `promise`, unless a failure comes first. */
  guard<T>(promise: Promise<T>): Promise<T> {
    if (this.failure) {
      promise.catch(() => undefined);
      return Promise.reject(this.failure);
    }
    return Promise.race([promise, this.tripped]);
  }

  /** Throws the failure, if there was one. */
  check(): void {
    if (this.failure) throw this.failure;
  }
}

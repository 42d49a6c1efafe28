import { NbdClient, NbdClosedError, NbdConnectionClosedError } from '@wanmig/nbd';
import { type NbdDiskAddress } from './nbd.uri.js';

export interface GuestDiskStats {
  writes: number;
  bytesWritten: number;
  flushes: number;
  errors: number;
  /** Times the connection to the disk was lost and made again. */
  reconnects: number;
  /** Requests sent again on a new connection (not acknowledged on the one that broke). */
  reissued: number;
}

/** Most writes the guest keeps in flight; beyond that it waits, as a VM's queue depth would make it. */
export const DISK_QUEUE_DEPTH = 8;
/** A lost connection is tried again this soon, backing off to RECONNECT_MAX_MS. */
const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 1000;

/** One request the guest issued and that is not answered yet. */
interface Request {
  run: (client: NbdClient) => Promise<Buffer | void>;
  resolve: (value: Buffer | void) => void;
  reject: (err: Error) => void;
  /** The connection it was last sent on. */
  sentOn?: NbdClient;
}

/**
 * The guest's disk, reached through NBD as a VM's disk is through its block layer: writes go out
 * without the main loop waiting (a queue of at most DISK_QUEUE_DEPTH), and `quiesce` waits for every
 * write in flight and flushes, so a paused guest has nothing on its way to the disk.
 *
 * The server (disk-transfer) may be killed and started again: the connection breaks, and like QEMU's
 * NBD client with reconnect, the guest then waits for its disk instead of failing its I/O. It
 * connects again to the same address (the restarted server serves the disk there) and sends again,
 * in the order it first issued them, the requests the broken connection never answered; meanwhile it
 * issues no new writes (its queue counts as full) and reads wait. A write is idempotent, so one the
 * old server applied without answering is merely applied twice. An error the server answers (EIO,
 * ENOSPC) is still a failure of the disk.
 */
export class GuestDisk {
  readonly stats: GuestDiskStats = { writes: 0, bytesWritten: 0, flushes: 0, errors: 0, reconnects: 0, reissued: 0 };
  private readonly inFlight = new Set<Promise<void>>();
  /** Issued and not answered, in the order the guest issued them. */
  private readonly unanswered = new Set<Request>();
  private client: NbdClient | undefined;
  private readonly sizeBytesAtConnect: number;
  private unflushed = false;
  private failure: Error | undefined;
  private closing = false;

  private constructor(
    private readonly address: NbdDiskAddress,
    client: NbdClient,
    private readonly log: (line: string) => void,
  ) {
    this.sizeBytesAtConnect = client.size;
    this.use(client);
  }

  static async connect(address: NbdDiskAddress, log: (line: string) => void): Promise<GuestDisk> {
    return new GuestDisk(address, await GuestDisk.open(address), log);
  }

  private static open(address: NbdDiskAddress): Promise<NbdClient> {
    return NbdClient.connect(address.target, { exportName: address.exportName, connectTimeoutMs: 5000 });
  }

  get sizeBytes(): number {
    return this.sizeBytesAtConnect;
  }

  /** Whether another write may be issued now (not while the disk is away: the guest waits for it). */
  get ready(): boolean {
    return this.failure === undefined && this.client !== undefined && this.inFlight.size < DISK_QUEUE_DEPTH;
  }

  /** The connection to the disk is broken and being made again. */
  get reconnecting(): boolean {
    return this.client === undefined && !this.closing && this.failure === undefined;
  }

  get failed(): Error | undefined {
    return this.failure;
  }

  /** Issues a write; `data` must not change afterwards. */
  write(offset: number, data: Buffer, fua: boolean): void {
    this.unflushed ||= !fua;
    this.track(
      this.issue((c) => c.write(offset, data, { fua })).then(() => {
        this.stats.writes++;
        this.stats.bytesWritten += data.length;
      }),
    );
  }

  flush(): void {
    this.unflushed = false;
    this.track(this.issue((c) => c.flush()).then(() => void this.stats.flushes++));
  }

  /** Resolves once no write is in flight and everything written is flushed. */
  async quiesce(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
    if (this.unflushed && this.failure === undefined) {
      this.flush();
      await Promise.all([...this.inFlight]);
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return (await this.issue((c) => c.read(offset, length))) as Buffer;
  }

  /** Stops for good: requests still waiting for the disk fail, the connection closes. */
  async close(): Promise<void> {
    if (this.client) await this.quiesce().catch(() => undefined);
    this.closing = true;
    this.failAll(new NbdClosedError('guest disk'));
    await this.client?.disconnect().catch(() => undefined);
  }

  private issue(run: (client: NbdClient) => Promise<Buffer | void>): Promise<Buffer | void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closing) return Promise.reject(new NbdClosedError('guest disk'));
    return new Promise((resolve, reject) => {
      const request: Request = { run, resolve, reject };
      this.unanswered.add(request);
      if (this.client) this.send(request, this.client);
    });
  }

  private send(request: Request, client: NbdClient): void {
    request.sentOn = client;
    let op: Promise<Buffer | void>;
    try {
      op = request.run(client);
    } catch (err) {
      // The client refuses synchronously once its connection is gone: handled as the rejections below.
      op = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    op.then(
      (value) => {
        if (!this.unanswered.delete(request)) return;
        request.resolve(value);
      },
      (err: unknown) => {
        // The connection broke under it: it waits, and goes again on the next connection.
        if (err instanceof NbdConnectionClosedError && !this.closing) return;
        if (!this.unanswered.delete(request)) return;
        request.reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  }

  private use(client: NbdClient): void {
    this.client = client;
    void client.closed.then(() => {
      if (this.client !== client || this.closing) return;
      this.client = undefined;
      void this.reconnect();
    });
  }

  private async reconnect(): Promise<void> {
    const lostAt = performance.now();
    this.log(`disk connection lost: reconnecting, ${this.unanswered.size} request(s) wait for it`);
    let wait = RECONNECT_FIRST_MS;
    while (!this.closing) {
      await new Promise((resolve) => setTimeout(resolve, wait));
      if (this.closing) return;
      let client: NbdClient;
      try {
        client = await GuestDisk.open(this.address);
      } catch {
        wait = Math.min(wait * 2, RECONNECT_MAX_MS);
        continue;
      }
      if (this.closing) {
        client.destroy();
        return;
      }
      if (client.size !== this.sizeBytesAtConnect) {
        client.destroy();
        this.fail(new Error(`the disk came back with ${client.size} bytes, not ${this.sizeBytesAtConnect}`));
        return;
      }
      this.use(client);
      const again = [...this.unanswered].filter((r) => r.sentOn !== client);
      for (const request of again) this.send(request, client);
      this.stats.reconnects++;
      this.stats.reissued += again.length;
      this.log(
        `disk reconnected after ${Math.round(performance.now() - lostAt)} ms: ${again.length} request(s) sent again`,
      );
      return;
    }
  }

  private fail(err: Error): void {
    if (this.failure === undefined) {
      this.failure = err;
      this.log(`disk I/O failed, no more disk writes: ${err.message}`);
    }
    this.failAll(err);
  }

  private failAll(err: Error): void {
    const requests = [...this.unanswered];
    this.unanswered.clear();
    for (const request of requests) request.reject(err);
  }

  private track(op: Promise<void>): void {
    const tracked = op.catch((err: unknown) => {
      this.stats.errors++;
      if (this.failure === undefined) {
        this.failure = err instanceof Error ? err : new Error(String(err));
        this.log(`disk I/O failed, no more disk writes: ${this.failure.message}`);
      }
    });
    const settled = tracked.finally(() => this.inFlight.delete(settled));
    this.inFlight.add(settled);
  }
}

import { open, readdir, readFile, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { BlockMap, type BlockGeometry } from '@wanmig/blockmap';
import { syncDirectory, writeFileAtomic } from './atomic-file.writer.js';
import { decodeJournalRecords, encodeJournalRecords } from './present-journal.codec.js';

export const PRESENT_MAP_FILE = 'present.map';
const JOURNAL_RE = /^present\.journal\.(\d+)$/;
const journalName = (generation: number): string => `present.journal.${generation}`;

/** Is this file name one of the present map's files (snapshot, its temporary, a journal)? */
export function isPresentMapFile(name: string): boolean {
  return name === PRESENT_MAP_FILE || name === `${PRESENT_MAP_FILE}.tmp` || JOURNAL_RE.test(name);
}

export interface PresentMapStoreOptions {
  /** Rewrite the snapshot at most this often; 0 rewrites it after every commit. */
  intervalMs: number;
  /** How the snapshot replaces the old one (tests count writes); default write-fsync-rename. */
  writeSnapshot?: (path: string, data: Uint8Array) => Promise<void>;
  /** A snapshot that failed to write: the journals stay, and the next snapshot retries. */
  onError?: (err: unknown) => void;
}

export interface OpenedPresentMap {
  store: PresentMapStore;
  /** What could not be used (a corrupt snapshot, a torn journal tail); the map is then smaller, never larger. */
  problems: string[];
}

/**
 * Persists a migration's present map: the blocks the destination has durably received at least once.
 *
 * Two files work together. `commit(batch)` appends the batch's extents to a journal and fdatasyncs
 * it; the disk target calls it after fsyncing the image and before the stream receiver saves its
 * watermark, so whatever the watermark says is durable is also in the journal: resume is exact, not
 * merely "about a second behind". At most once per interval the whole map is written as a snapshot
 * (`present.map`, atomic) and the journals it covers are deleted. The journal is rotated first, in
 * the same queued step that serialises the map, so a block is always in the snapshot or in a
 * journal that survives it. Reading = snapshot ∪ every journal (a union: replaying twice is harmless).
 *
 * The map only ever holds committed (durable) blocks, so it may under-report after a corrupt file,
 * never over-report: a sender that trusts it re-sends a block it need not, but never skips one.
 */
export class PresentMapStore {
  private journal?: FileHandle;
  private journalBroken = false;
  private queue: Promise<void> = Promise.resolve();
  private snapshotWrite: Promise<void> = Promise.resolve();
  private dirty = false;
  private lastSnapshotAt = -Infinity;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private readonly writeSnapshot: (path: string, data: Uint8Array) => Promise<void>;

  private constructor(
    readonly dir: string,
    /** Committed blocks; grows with each commit. */
    readonly durable: BlockMap,
    private generation: number,
    private readonly options: PresentMapStoreOptions,
  ) {
    this.writeSnapshot = options.writeSnapshot ?? writeFileAtomic;
  }

  /** Reads the snapshot and replays the journals, then starts a fresh journal for this run. */
  static async open(dir: string, geometry: BlockGeometry, options: PresentMapStoreOptions): Promise<OpenedPresentMap> {
    const problems: string[] = [];
    let map = new BlockMap(geometry);
    try {
      map = BlockMap.deserialize(await readFile(join(dir, PRESENT_MAP_FILE)), geometry);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') problems.push(`${PRESENT_MAP_FILE}: ${message(err)}`);
    }
    const generations = await journalGenerations(dir);
    for (const generation of generations) {
      const name = journalName(generation);
      const decoded = decodeJournalRecords(await readFile(join(dir, name)), geometry.blockCount);
      for (const { start, count } of decoded.extents) map.setRange(start, count);
      if (decoded.problem) problems.push(`${name}: ${decoded.problem}`);
    }
    // Never append to an old journal: its tail may be torn, and records after it would be ignored.
    const store = new PresentMapStore(dir, map, (generations.at(-1) ?? 0) + 1, options);
    await store.openJournal();
    if (generations.length > 0) {
      // Fold the replayed journals into a snapshot soon, so they do not pile up across restarts.
      store.dirty = true;
      store.schedule();
    }
    return { store, problems };
  }

  /** Makes `batch` (blocks whose data is already durable) durable in the map, then adds it. */
  commit(batch: BlockMap): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`present map in ${this.dir} is closed`));
    return this.enqueue(async () => {
      if (batch.isEmpty) return;
      if (this.journalBroken || !this.journal) await this.rotateJournal();
      const records = encodeJournalRecords(batch);
      try {
        await this.journal!.write(records, 0, records.length, null);
        await this.journal!.datasync();
      } catch (err) {
        // A partial record may sit at its tail: later records go to a fresh journal.
        this.journalBroken = true;
        throw err;
      }
      this.durable.unionInPlace(batch);
      this.dirty = true;
      this.schedule();
    });
  }

  /** Writes a snapshot now if anything was committed since the last one, and waits for it. */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.enqueue(() => this.startSnapshot());
    await this.snapshotWrite;
  }

  /** Final snapshot; the journals it covers (all of them) are deleted. Later commits are refused. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.flush();
    await this.enqueue(async () => {
      await this.journal?.close();
      this.journal = undefined;
      // Only when the last snapshot really holds everything may the journals go.
      if (!this.dirty) await this.removeJournals(Infinity);
    });
  }

  private schedule(): void {
    if (this.timer || this.closed) return;
    const delay = Math.max(0, this.lastSnapshotAt + this.options.intervalMs - performance.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.enqueue(() => this.startSnapshot()).catch((err: unknown) => this.options.onError?.(err));
    }, delay);
    this.timer.unref();
  }

  /**
   * Runs inside the queue (no commit is half done): serialises the map, moves appends to a new
   * journal, and writes the snapshot in the background, deleting the older journals once it is in
   * place. Commits go on meanwhile, into the new journal.
   */
  private async startSnapshot(): Promise<void> {
    if (!this.dirty) return;
    const bytes = this.durable.serialize();
    this.dirty = false;
    this.lastSnapshotAt = performance.now();
    const covered = this.generation;
    await this.rotateJournal();
    const previous = this.snapshotWrite;
    this.snapshotWrite = (async () => {
      await previous;
      try {
        await this.writeSnapshot(join(this.dir, PRESENT_MAP_FILE), bytes);
        await this.removeJournals(covered);
      } catch (err) {
        this.dirty = true;
        this.options.onError?.(err);
      }
    })();
  }

  private async rotateJournal(): Promise<void> {
    const old = this.journal;
    this.journal = undefined;
    await old?.close();
    if (old) this.generation++;
    await this.openJournal();
  }

  private async openJournal(): Promise<void> {
    this.journal = await open(join(this.dir, journalName(this.generation)), 'a');
    this.journalBroken = false;
    await syncDirectory(this.dir);
  }

  /** Deletes the journals up to and including `generation`. */
  private async removeJournals(generation: number): Promise<void> {
    const old = (await journalGenerations(this.dir)).filter((g) => g <= generation);
    await Promise.all(old.map((g) => rm(join(this.dir, journalName(g)), { force: true })));
  }

  private enqueue(work: () => Promise<void>): Promise<void> {
    const run = this.queue.then(work);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

async function journalGenerations(dir: string): Promise<number[]> {
  const names = await readdir(dir);
  return names
    .map((name) => JOURNAL_RE.exec(name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

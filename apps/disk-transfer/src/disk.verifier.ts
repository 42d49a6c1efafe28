import { RegionDigestCache, type DigestRefresh } from '@wanmig/stream';
import type { DiskExport } from './disk.export.js';
import { VerifyMismatchError } from './errors.js';

/** Regions are at least this big, and there are at most REGIONS_PER_DISK of them (larger regions beyond). */
const MIN_REGION_BYTES = 4 * 1024 * 1024;
const REGIONS_PER_DISK = 4096;

/**
 * The destination is asked for its digests in the background at most this often: it keeps them current on its own
 * as frames arrive, so the asks only make it start (and start again after a restart, which loses them) for a few
 * dozen KB on the WAN each.
 */
const REMOTE_ASK_MS = 5_000;

/** The destination's region digests of its whole image (delta-apply's `disk.digest`, regions of `regionBytes`). */
export type RemoteDigests = (regionBytes: number) => Promise<string[]>;

export interface DiskVerifierOptions {
  migrationId: string;
  imagePath: string;
  sizeBytes: number;
  blockSize: number;
  remote: RemoteDigests;
  log?: (line: string) => void;
}

/** Regions of whole blocks, few enough for one digest reply. */
export function verifyRegionBytes(sizeBytes: number, blockSize: number): number {
  return Math.max(MIN_REGION_BYTES, Math.ceil(sizeBytes / REGIONS_PER_DISK / blockSize) * blockSize);
}

/** Indexes of the regions whose digests differ; a list of another length differs from where the shorter ends. */
export function differingRegions(local: string[], remote: string[]): number[] {
  const bad = local.map((digest, i) => (remote[i] === digest ? -1 : i)).filter((i) => i >= 0);
  if (remote.length !== local.length && bad.length === 0) bad.push(Math.min(local.length, remote.length));
  return bad;
}

/**
 * The end-of-migration comparison of the source image with the destination's, region by region (sha256 of each
 * region of `regionBytes`), with both sides' digests kept incrementally so the pause hashes only what changed.
 *
 * `track` starts it once the bulk copy is done: the source's digests are taken in the background from the image
 * file, and every write the export receives marks its regions to be hashed again; the destination is asked too, so it
 * takes its own digests while frames still arrive (delta-apply re-hashes the regions its applied frames touched).
 * `kick` (after each round) re-hashes what changed since, at both ends, in the background. `verify` (writes frozen,
 * every frame durable at the destination) re-hashes only the regions touched since their last digest and compares
 * every region of the whole disk: a destination that differs anywhere fails the migration before it runs.
 *
 * What this trusts: the write tracking. The source's digests follow the export's writes (the gate reports each one
 * once it is in the image; QEMU's write-blocking mirror writes the source image before it tells the export), the
 * destination's follow the frames it applies. What it still catches: anything that makes the destination's bytes
 * differ from the source's through the migration's own path (a frame lost, corrupted, applied at the wrong place or
 * out of order, a codec or apply bug, a dirty bit lost between a write and its resend: the regions written are marked
 * in a map of their own), in any region, touched lately or not. What it does not catch: a write the tracking missed
 * after the region's digest was taken, at either end (a write the gate never reported, which the dirty map misses
 * too; another process writing an image file behind the export's or delta-apply's back; a bit flipping on the disk):
 * that region keeps the digest of its earlier bytes. A delta-apply restart loses its digests, so it hashes its whole
 * image again when next asked, which does see whatever changed while it was down.
 */
export class DiskVerifier {
  readonly regionBytes: number;
  private readonly local: RegionDigestCache;
  private localPass?: Promise<unknown>;
  private remotePass?: Promise<unknown>;
  private settling?: Promise<DigestRefresh>;
  private lastRemoteAsk = -Infinity;
  private passes = 0;
  private unwatch?: () => void;

  constructor(private readonly o: DiskVerifierOptions) {
    this.regionBytes = verifyRegionBytes(o.sizeBytes, o.blockSize);
    this.local = new RegionDigestCache({ path: o.imagePath, sizeBytes: o.sizeBytes, regionBytes: this.regionBytes });
  }

  /** From now on the export's writes mark their regions; the first digests are taken in the background. */
  track(disk: DiskExport | undefined): void {
    this.unwatch ??= disk?.onWrite((offset, length) => this.local.touch(offset, length));
    this.kick();
  }

  /**
   * Re-hashes in the background what changed at the source since the last pass (once the last pass has rested, see
   * RegionDigestCache.backgroundDueAt), and asks the destination to do the same (at most every REMOTE_ASK_MS). A pass
   * still under way is left be.
   */
  kick(): void {
    const first = this.passes++ === 0;
    if (!this.localPass && performance.now() >= this.local.backgroundDueAt) {
      this.localPass = this.local
        .refresh()
        .then((pass) => {
          if (first) this.o.log?.(`migration ${this.o.migrationId}: source digests taken: ${describePass(pass)}`);
        })
        .catch((err: unknown) =>
          this.o.log?.(`migration ${this.o.migrationId}: background digests of the source: ${describe(err)}`),
        )
        .finally(() => (this.localPass = undefined));
    }
    if (this.remotePass || performance.now() - this.lastRemoteAsk < REMOTE_ASK_MS) return;
    const asked = (this.lastRemoteAsk = performance.now());
    this.remotePass = this.o
      .remote(this.regionBytes)
      .then(() => {
        if (first) {
          const ms = Math.round(performance.now() - asked);
          this.o.log?.(`migration ${this.o.migrationId}: destination digests taken in ${ms} ms`);
        }
      })
      .catch((err: unknown) => {
        this.lastRemoteAsk = -Infinity; // asked again at the next kick
        this.o.log?.(`migration ${this.o.migrationId}: background digests of the destination: ${describe(err)}`);
      })
      .finally(() => (this.remotePass = undefined));
  }

  /** Starts re-hashing the source's touched regions now (writes are frozen), while the last blocks travel. */
  settleLocal(): void {
    this.settling ??= this.local.refresh();
    // Awaited by verify, which reports a failure; a migration that fails before it must not leave it unhandled.
    this.settling.catch(() => undefined);
  }

  /**
   * Compares every region of both images (writes frozen, every frame durable at the destination); only regions
   * touched since their digest are hashed again. Any difference throws VerifyMismatchError, naming the regions.
   */
  async verify(): Promise<void> {
    const [remote, settled, local] = await Promise.all([
      this.o.remote(this.regionBytes),
      this.settling,
      this.local.digests(),
    ]);
    this.report([settled, local.refresh], local.digests.length);
    const bad = differingRegions(local.digests, remote);
    if (bad.length > 0) throw new VerifyMismatchError(this.o.migrationId, bad, this.regionBytes);
  }

  /** No more writes to follow. */
  stop(): void {
    this.unwatch?.();
    this.unwatch = undefined;
  }

  private report(refreshes: Array<DigestRefresh | undefined>, regions: number): void {
    const sum = (field: keyof DigestRefresh) => refreshes.reduce((total, r) => total + (r?.[field] ?? 0), 0);
    const pass = { regions: sum('regions'), bytesRead: sum('bytesRead'), ms: sum('ms') };
    this.o.log?.(`migration ${this.o.migrationId}: verify compared ${regions} regions, ${describePass(pass)}`);
  }
}

function describePass(pass: DigestRefresh): string {
  return `${pass.regions} region(s) hashed, ${pass.bytesRead} bytes read, in ${Math.round(pass.ms)} ms`;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

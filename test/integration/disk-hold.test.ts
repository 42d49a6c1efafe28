import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Subscription } from '@nats-io/nats-core';
import { NbdClient } from '@wanmig/nbd';
import {
  callControl,
  controlSubject,
  DiskTransferVerb,
  ErrorCode,
  ServiceName,
  Subjects,
  type DiskMigrationReport,
  type DiskProgress,
  type ExportDiskReply,
} from '@wanmig/protocol';
import { LocalBed, Site, waitUntil } from '@wanmig/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const MiB = 1024 * 1024;
const on = (verb: DiskTransferVerb) => controlSubject(Site.A, ServiceName.DiskTransfer, verb);

type DiskEvent = { type: 'progress' } & DiskProgress;
type State = DiskProgress & { report?: DiskMigrationReport; error?: { code: string; message: string } };

/** A sparse image with a few MiB of random data scattered over it. */
async function makeImage(path: string, sizeBytes: number, writtenMiB: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.truncate(sizeBytes);
    const slots = sizeBytes / MiB;
    for (let i = 0; i < writtenMiB; i++) await fh.write(randomBytes(MiB), 0, MiB, ((i * 7) % slots) * MiB);
  } finally {
    await fh.close();
  }
}

async function sha256(path: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(path))
    .digest('hex');
}

async function readAt(path: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, offset);
    return buf;
  } finally {
    await fh.close();
  }
}

async function exportImage(bed: LocalBed, name: string, imagePath: string): Promise<NbdClient> {
  const exported = await callControl<ExportDiskReply>(bed.nc, on(DiskTransferVerb.Export), {
    name,
    imagePath,
    port: 0,
  });
  const url = new URL(exported.uri);
  return NbdClient.connect({ host: url.hostname, port: Number(url.port) }, { exportName: name });
}

/** Resolves once the promise settles, or with 'pending' after `ms`. */
function settledWithin<T>(promise: Promise<T>, ms: number): Promise<T | 'pending'> {
  return Promise.race([promise, new Promise<'pending'>((resolve) => setTimeout(() => resolve('pending'), ms))]);
}

/** Progress events of one migration, kept as they come. */
function watch(bed: LocalBed, migrationId: string): { phases: Set<string>; last?: DiskEvent; sub: Subscription } {
  const seen: { phases: Set<string>; last?: DiskEvent; sub: Subscription } = {
    phases: new Set(),
    sub: bed.nc.subscribe(Subjects.diskEvents(migrationId)),
  };
  void (async () => {
    for await (const msg of seen.sub) {
      const event = msg.json<DiskEvent>();
      if (event.type !== 'progress') continue;
      seen.phases.add(event.phase);
      seen.last = event;
    }
  })();
  return seen;
}

describe('disk migration with hold (two-site bed, real services)', () => {
  let bed: LocalBed;

  beforeAll(async () => {
    bed = await LocalBed.start({ delayMs: 10, bandwidthBps: 200e6 });
  });

  afterAll(async () => {
    await bed?.stop();
  });

  it('holds the destination in step with writes until finalize; the report is verified and the images equal', async () => {
    const imagePath = join(bed.dir, 'held.img');
    const destPath = join(bed.dir, 'site-b', 'held-dest.img');
    await makeImage(imagePath, 64 * MiB, 8);
    const client = await exportImage(bed, 'held', imagePath);
    const migrationId = randomUUID();
    const seen = watch(bed, migrationId);

    // A guest writing 64 KiB blocks of the first 32 MiB all along, before and while the migration holds.
    let writing = true;
    let writes = 0;
    const writer = (async () => {
      while (writing) {
        await client.write(Math.floor(Math.random() * 512) * 64 * 1024, randomBytes(64 * 1024));
        writes++;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    })();

    try {
      await callControl(bed.nc, on(DiskTransferVerb.Migrate), {
        migrationId,
        exportName: 'held',
        toSite: Site.B,
        destPath,
        hold: true,
      });
      await waitUntil(() => seen.last?.phase === 'holding', {
        what: 'phase holding',
        timeoutMs: 30_000,
        intervalMs: 50,
      });
      const held = await callControl<State>(bed.nc, on(DiskTransferVerb.Progress), { migrationId });
      expect(held.phase).toBe('holding');
      expect(held.report).toBeUndefined();

      // A write made while holding (where the guest above does not write) reaches the destination image without any
      // finalize.
      const marker = randomBytes(64 * 1024);
      const markerAt = 40 * MiB + 128 * 1024;
      await client.write(markerAt, marker);
      await waitUntil(async () => (await readAt(destPath, markerAt, marker.length)).equals(marker), {
        what: 'the marker at the destination',
        timeoutMs: 10_000,
        intervalMs: 50,
      });
      expect(seen.last?.phase).toBe('holding');
    } finally {
      // The VM pauses: its writes stop before the finalize.
      writing = false;
      await writer;
    }
    expect(writes).toBeGreaterThan(10);

    const t0 = performance.now();
    const report = await callControl<DiskMigrationReport>(
      bed.nc,
      on(DiskTransferVerb.Finalize),
      { migrationId },
      60_000,
    );
    const finalizeMs = performance.now() - t0;
    expect(report.verified).toBe(true);
    expect(report.destPath).toBe(destPath);
    expect(report.downtimeMs).toBeLessThan(finalizeMs + 1);
    expect(seen.phases).toContain('holding');
    expect(seen.phases).toContain('final-drain');
    // Writes stay frozen after a held finalize: the images are compared as they are.
    expect(await sha256(destPath)).toBe(await sha256(imagePath));

    // Idempotent: a second finalize gets the same report.
    const again = await callControl<DiskMigrationReport>(bed.nc, on(DiskTransferVerb.Finalize), { migrationId });
    expect(again).toEqual(report);

    // Writes are frozen: one issued now waits ...
    const pending = client.write(0, Buffer.alloc(4096, 7));
    expect(await settledWithin(pending, 300)).toBe('pending');
    // ... until the rollback's abort thaws them (the VM stays here and writes again).
    const aborted = await callControl<State>(bed.nc, on(DiskTransferVerb.Abort), { migrationId });
    expect(aborted.phase).toBe('done');
    expect(aborted.report?.verified).toBe(true);
    expect(await settledWithin(pending, 5_000)).toBeUndefined();
    await client.write(4096, Buffer.alloc(4096, 8));
    expect(
      (await readAt(imagePath, 0, 8192)).equals(Buffer.concat([Buffer.alloc(4096, 7), Buffer.alloc(4096, 8)])),
    ).toBe(true);
    seen.sub.unsubscribe();
    await client.disconnect();
  });

  it('a destination region changed while delta-apply was down fails the finalize, naming it; the source writes again', async () => {
    const imagePath = join(bed.dir, 'corrupted.img');
    const destPath = join(bed.dir, 'site-b', 'corrupted-dest.img');
    await makeImage(imagePath, 64 * MiB, 8); // data at 0, 7, 14, ... 49 MiB
    const client = await exportImage(bed, 'corrupted', imagePath);
    const migrationId = randomUUID();
    const seen = watch(bed, migrationId);
    await callControl(bed.nc, on(DiskTransferVerb.Migrate), {
      migrationId,
      exportName: 'corrupted',
      toSite: Site.B,
      destPath,
      hold: true,
    });
    await waitUntil(() => seen.last?.phase === 'holding', { what: 'phase holding', timeoutMs: 30_000, intervalMs: 50 });
    // Writes kept in step, so some regions are hashed again at the end and most are not.
    await client.write(MiB, randomBytes(64 * 1024));

    // Garbage in a region copied by the bulk pass that nothing writes afterwards (region 12 of 4 MiB: 48-52 MiB),
    // written behind delta-apply's back while it is down. Its digests are in memory only, so the restarted service
    // hashes the whole image again at the first ask, and the comparison covers every region.
    await bed.crashAndRestartDeltaApply(0, async () => {
      const fh = await open(destPath, 'r+');
      try {
        await fh.write(randomBytes(4096), 0, 4096, 49 * MiB + 8192);
      } finally {
        await fh.close();
      }
    });
    await client.write(2 * MiB, randomBytes(64 * 1024));
    await waitUntil(async () => (await readAt(destPath, 2 * MiB, 16)).equals(await readAt(imagePath, 2 * MiB, 16)), {
      what: 'the write after the restart at the destination',
      timeoutMs: 30_000,
      intervalMs: 50,
    });

    const t0 = performance.now();
    const failure = await callControl(bed.nc, on(DiskTransferVerb.Finalize), { migrationId }, 60_000).then(
      () => undefined,
      (err: unknown) => err,
    );
    console.info(`[disk-hold] finalize that found the corrupted region: ${Math.round(performance.now() - t0)} ms`);
    expect(failure).toMatchObject({
      code: ErrorCode.Conflict,
      message: expect.stringMatching(
        /differs from the source in 1 region\(s\) of 4194304 bytes \(first at 50331648\)/,
      ) as unknown,
    });
    const state = await callControl<State>(bed.nc, on(DiskTransferVerb.Progress), { migrationId });
    expect(state.phase).toBe('failed');
    // A failed migration does not leave the source frozen: the VM stays here and writes.
    expect(await settledWithin(client.write(0, Buffer.alloc(4096, 1)), 2_000)).toBeUndefined();
    seen.sub.unsubscribe();
    await client.disconnect();
  });

  it('an abort while holding fails the migration and the source keeps writing', async () => {
    const imagePath = join(bed.dir, 'abort-held.img');
    await makeImage(imagePath, 16 * MiB, 2);
    const client = await exportImage(bed, 'abort-held', imagePath);
    const migrationId = randomUUID();
    const seen = watch(bed, migrationId);
    await callControl(bed.nc, on(DiskTransferVerb.Migrate), {
      migrationId,
      exportName: 'abort-held',
      toSite: Site.B,
      hold: true,
    });
    await waitUntil(() => seen.last?.phase === 'holding', { what: 'phase holding', timeoutMs: 30_000, intervalMs: 50 });
    await callControl<State>(bed.nc, on(DiskTransferVerb.Abort), { migrationId });
    await waitUntil(
      async () =>
        (await callControl<State>(bed.nc, on(DiskTransferVerb.Progress), { migrationId })).error !== undefined,
      { what: 'the aborted migration to fail', timeoutMs: 5_000, intervalMs: 50 },
    );
    const state = await callControl<State>(bed.nc, on(DiskTransferVerb.Progress), { migrationId });
    expect(state.phase).toBe('failed');
    expect(state.error?.code).toBe(ErrorCode.Conflict);
    // Not frozen: a write completes at once.
    expect(await settledWithin(client.write(0, Buffer.alloc(4096, 1)), 2_000)).toBeUndefined();
    // Finalizing a failed migration reports its failure.
    await expect(callControl(bed.nc, on(DiskTransferVerb.Finalize), { migrationId })).rejects.toMatchObject({
      code: ErrorCode.Conflict,
    });
    seen.sub.unsubscribe();
    await client.disconnect();
  });

  it('refuses to finalize a migration without hold, and to abort one that finished with writes flowing', async () => {
    const imagePath = join(bed.dir, 'plain.img');
    await makeImage(imagePath, 8 * MiB, 1);
    const migrationId = randomUUID();
    await callControl(bed.nc, on(DiskTransferVerb.Migrate), { migrationId, imagePath, toSite: Site.B });
    await expect(callControl(bed.nc, on(DiskTransferVerb.Finalize), { migrationId })).rejects.toMatchObject({
      code: ErrorCode.Conflict,
      message: expect.stringMatching(/not started with hold/) as unknown,
    });
    await waitUntil(
      async () =>
        (await callControl<State>(bed.nc, on(DiskTransferVerb.Progress), { migrationId })).report !== undefined,
      { what: 'the plain migration to finish', timeoutMs: 30_000, intervalMs: 100 },
    );
    await expect(callControl(bed.nc, on(DiskTransferVerb.Abort), { migrationId })).rejects.toMatchObject({
      code: ErrorCode.Conflict,
    });
  });
});

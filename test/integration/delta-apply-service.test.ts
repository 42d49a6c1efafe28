import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { BlockMap } from '@wanmig/blockmap';
import { ChunkEncoder, mixedDataset } from '@wanmig/codec';
import {
  callControl,
  controlSubject,
  DiskStreamId,
  DiskVerb,
  ErrorCode,
  ServiceName,
  StreamKind,
  Subjects,
  WanmigError,
  type DiskDigestReply,
  type DiskStatusReply,
  type PrepareDiskReply,
  type ReleaseDiskReply,
} from '@wanmig/protocol';
import { RecordStreamWriter, StreamSender } from '@wanmig/stream';
import {
  fetchMonitor,
  serviceEntry,
  ServiceProcess,
  Site,
  startTwoSites,
  waitForRemoteInterest,
  waitUntil,
  type TwoSites,
} from '@wanmig/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const SITE = Site.B;
const SIZE = 64 * 1024 * 1024;
const BLOCK = 64 * 1024;
const WINDOW = 2 * 1024 * 1024;
const FRAME_SPAN = 256 * 1024;
const READY = /delta-apply ready site=site-b .*migrations=(\d+)/;
const sha = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

describe('delta-apply service (built, behind the emulated WAN at site B)', () => {
  let sites: TwoSites;
  let ncA: NatsConnection;
  let dataDir: string;
  let service: ServiceProcess;
  /** Everything the current service process printed. */
  let output: string[] = [];
  let image: Buffer;

  const subject = (verb: DiskVerb): string => controlSubject(SITE, ServiceName.DeltaApply, verb);
  const call = <T>(verb: DiskVerb, body: object): Promise<T> => callControl<T>(ncA, subject(verb), body);
  const launch = (): Promise<ServiceProcess> => {
    output = [];
    return ServiceProcess.start({
      service: 'delta-apply',
      args: ['--nats', sites.b.url, '--site', SITE, '--data-dir', dataDir],
      readyPattern: READY,
      log: (line) => output.push(line),
    });
  };
  const startService = async (): Promise<ServiceProcess> => {
    const started = await launch();
    // Site A learns of site B's subscriptions one WAN delay later.
    await waitForRemoteInterest(sites.a, subject(DiskVerb.Release));
    return started;
  };
  const printed = (): string => output.join('\n');
  const codeOf = async (work: Promise<unknown>): Promise<string> => {
    try {
      await work;
    } catch (err) {
      if (err instanceof WanmigError) return err.code;
      throw err;
    }
    throw new Error('expected a typed error');
  };

  /** Sends `data` from site A as disk stream frames; `atOffset` runs after each frame span is handed over. */
  async function push(migrationId: string, data: Buffer, atOffset?: (sent: number) => Promise<void>) {
    const sender = new StreamSender({
      nc: ncA,
      migrationId,
      streamId: DiskStreamId,
      kind: StreamKind.Disk,
      windowBytes: WINDOW,
    });
    const writer = new RecordStreamWriter(sender, new ChunkEncoder(), FRAME_SPAN);
    await sender.open();
    for (let offset = 0; offset < data.length; offset += FRAME_SPAN) {
      await writer.write(offset, data.subarray(offset, Math.min(data.length, offset + FRAME_SPAN)));
      await atOffset?.(offset + FRAME_SPAN);
    }
    await writer.finish();
    sender.close();
    return { sender, writer };
  }

  async function expectDigestsMatch(
    migrationId: string,
    data: Buffer,
    regionBytes: number,
    offset = 0,
    length?: number,
  ) {
    const reply = await call<DiskDigestReply>(DiskVerb.Digest, { migrationId, regionBytes, offset, length });
    const end = offset + (length ?? data.length - offset);
    const expected: string[] = [];
    for (let at = offset; at < end; at += regionBytes)
      expected.push(sha(data.subarray(at, Math.min(end, at + regionBytes))));
    expect(reply).toEqual({ regionBytes, offset, digests: expected });
  }

  beforeAll(async () => {
    serviceEntry('delta-apply'); // fails at once, and says so, when dist/ has not been built
    sites = await startTwoSites({ delayMs: 10, bandwidthBps: 200e6 });
    ncA = await connect({ servers: sites.a.url });
    dataDir = await mkdtemp(join(tmpdir(), 'wanmig-delta-apply-'));
    image = Buffer.concat([...mixedDataset({ size: SIZE, seed: 11, chunkSize: 1024 * 1024 })].map((c) => c.data));
    service = await startService();
  });

  afterAll(async () => {
    await service?.kill9();
    await ncA?.close();
    await sites?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('prepares a sparse image, receives a mixed image from site A, and digests it like the source', async () => {
    const migrationId = randomUUID();
    const prepared = await call<PrepareDiskReply>(DiskVerb.Prepare, { migrationId, sizeBytes: SIZE });
    const path = join(dataDir, migrationId, 'disk.img');
    expect(prepared).toEqual({ path, resumed: false, nextSeq: 0, cursor: 0, presentBlocks: 0 });
    const created = await stat(path);
    expect(created.size).toBe(SIZE);
    expect(created.blocks * 512).toBeLessThan(1024 * 1024); // sparse
    expect(JSON.parse(await readFile(join(dataDir, migrationId, 'manifest.json'), 'utf8'))).toMatchObject({
      migrationId,
      sizeBytes: SIZE,
      blockSize: BLOCK,
      path,
      finished: false,
    });

    const started = performance.now();
    const { sender } = await push(migrationId, image);
    const seconds = (performance.now() - started) / 1000;

    const status = await waitUntil(
      async () => {
        const s = await call<DiskStatusReply>(DiskVerb.Status, { migrationId });
        return s.finished && s;
      },
      { what: 'finished status', timeoutMs: 5_000 },
    );
    expect(status).toMatchObject({
      migrationId,
      path,
      sizeBytes: SIZE,
      blockSize: BLOCK,
      cursor: SIZE,
      rejectedFrames: 0,
    });
    expect(status.presentBlocks).toBe(SIZE / BLOCK);
    expect(status.nextSeq).toBe(sender.sequence);
    await expectDigestsMatch(migrationId, image, 8 * 1024 * 1024);
    // A range that starts mid-image and ends in a short region.
    await expectDigestsMatch(migrationId, image, 1024 * 1024, 3 * 4096, 5 * 1024 * 1024 + 123);
    expect(sha(await readFile(path))).toBe(sha(image));
    // Zero pages were not written: the image stays sparse where the source is zero.
    expect((await stat(path)).blocks * 512).toBeLessThan(SIZE * 0.8);
    // The present map on disk says the same as the status.
    const persisted = BlockMap.deserialize(await readFile(join(dataDir, migrationId, 'present.map')));
    expect(persisted.count).toBe(SIZE / BLOCK);
    console.log(
      `delta-apply: ${SIZE >> 20} MiB mixed image over 10 ms / 200 Mbit/s in ${seconds.toFixed(2)} s, ` +
        `${(sender.stats.bytesSent / 2 ** 20).toFixed(1)} MiB of frames`,
    );
  });

  it('answers a repeated or concurrent prepare with the same image and one receiver; refuses another size', async () => {
    const migrationId = randomUUID();
    const body = { migrationId, sizeBytes: 4 * 1024 * 1024 + 512, blockSize: 4096 };
    const [first, second] = await Promise.all([
      call<PrepareDiskReply>(DiskVerb.Prepare, body),
      call<PrepareDiskReply>(DiskVerb.Prepare, body),
    ]);
    const third = await call<PrepareDiskReply>(DiskVerb.Prepare, body);
    expect([first.resumed, second.resumed].sort()).toEqual([false, true]);
    for (const reply of [first, second, third]) {
      expect(reply).toMatchObject({ path: join(dataDir, migrationId, 'disk.img'), nextSeq: 0, cursor: 0 });
    }
    const connz = await fetchMonitor<{
      connections: Array<{ subscriptions_list_detail?: Array<{ subject: string }> }>;
    }>(sites.b, '/connz?subs=detail');
    const dataSubs = connz.connections
      .flatMap((c) => c.subscriptions_list_detail ?? [])
      .filter((s) => s.subject === Subjects.data(migrationId, DiskStreamId));
    expect(dataSubs).toHaveLength(1);
    expect(await codeOf(call(DiskVerb.Prepare, { ...body, sizeBytes: body.sizeBytes * 2 }))).toBe(ErrorCode.Conflict);
    expect(await codeOf(call(DiskVerb.Prepare, { ...body, blockSize: 8192 }))).toBe(ErrorCode.Conflict);

    const released = await call<ReleaseDiskReply>(DiskVerb.Release, { migrationId, deleteImage: true });
    expect(released).toEqual({ migrationId, path: join(dataDir, migrationId, 'disk.img'), imageDeleted: true });
    expect(existsSync(join(dataDir, migrationId))).toBe(false);
    expect(await codeOf(call(DiskVerb.Status, { migrationId }))).toBe(ErrorCode.NotFound);
  });

  it('rejects bad input with typed codes and leaves no files behind', async () => {
    const before = (await readdir(dataDir)).sort();
    const migrationId = randomUUID();
    expect(await codeOf(call(DiskVerb.Prepare, { migrationId: 'nope', sizeBytes: -1 }))).toBe(ErrorCode.InvalidRequest);
    expect(await codeOf(call(DiskVerb.Prepare, { migrationId, sizeBytes: 4096, colour: 'red' }))).toBe(
      ErrorCode.InvalidRequest,
    );
    expect(await codeOf(call(DiskVerb.Prepare, { migrationId, sizeBytes: 4096, blockSize: 5000 }))).toBe(
      ErrorCode.InvalidRequest,
    );
    expect(await codeOf(call(DiskVerb.Prepare, { migrationId, sizeBytes: 4096, path: 'relative.img' }))).toBe(
      ErrorCode.InvalidRequest,
    );
    expect(await codeOf(call(DiskVerb.Prepare, { migrationId: migrationId.toUpperCase(), sizeBytes: 4096 }))).toBe(
      ErrorCode.InvalidRequest,
    );
    const fs = await statfs(dataDir);
    const beyond = fs.bavail * fs.bsize + 1024 ** 3;
    try {
      await call(DiskVerb.Prepare, { migrationId, sizeBytes: beyond });
      expect.unreachable('a prepare beyond the free space must fail');
    } catch (err) {
      expect(err).toBeInstanceOf(WanmigError);
      expect((err as WanmigError).code).toBe(ErrorCode.NoSpace);
      expect((err as WanmigError).message).toMatch(/not enough room/);
    }
    for (const verb of [DiskVerb.Status, DiskVerb.Release]) {
      expect(await codeOf(call(verb, { migrationId }))).toBe(ErrorCode.NotFound);
    }
    expect(await codeOf(call(DiskVerb.Digest, { migrationId, regionBytes: 4096 }))).toBe(ErrorCode.NotFound);
    expect(await codeOf(call(DiskVerb.Status, {}))).toBe(ErrorCode.InvalidRequest);
    expect((await readdir(dataDir)).sort()).toEqual(before);

    // Digest requests are bounded: too many regions, or a range past the end.
    const big = randomUUID();
    await call(DiskVerb.Prepare, { migrationId: big, sizeBytes: 512 * 1024 * 1024 });
    expect(await codeOf(call(DiskVerb.Digest, { migrationId: big, regionBytes: 4096 }))).toBe(ErrorCode.InvalidRequest);
    expect(
      await codeOf(
        call(DiskVerb.Digest, { migrationId: big, regionBytes: 2 ** 20, offset: 2 ** 29 - 4096, length: 8192 }),
      ),
    ).toBe(ErrorCode.InvalidRequest);
    await call(DiskVerb.Release, { migrationId: big, deleteImage: true });
    expect((await readdir(dataDir)).sort()).toEqual(before);
  });

  it('survives kill -9 half way: restarts, resumes from its watermark and completes, re-sending ≤ 5 %', async () => {
    const migrationId = randomUUID();
    await call<PrepareDiskReply>(DiskVerb.Prepare, { migrationId, sizeBytes: SIZE });
    let killedAt = -1;
    let downMs = 0;
    const { sender } = await push(migrationId, image, async (sent) => {
      if (killedAt >= 0 || sent < SIZE / 2) return;
      killedAt = sent;
      const down = performance.now();
      await service.kill9();
      expect(service.child.signalCode).toBe('SIGKILL');
      service = await launch();
      downMs = performance.now() - down;
      expect(printed()).toMatch(new RegExp(`resumed ${migrationId}: seq [1-9]\\d*`));
    });
    expect(killedAt).toBeGreaterThan(0);
    await waitForRemoteInterest(sites.a, subject(DiskVerb.Status));
    const status = await waitUntil(
      async () => {
        const s = await call<DiskStatusReply>(DiskVerb.Status, { migrationId });
        return s.finished && s;
      },
      { what: 'finished status after the restart', timeoutMs: 5_000 },
    );
    expect(status.cursor).toBe(SIZE);
    // The present map came back exactly (snapshot + journal), so it ends complete.
    expect(status.presentBlocks).toBe(SIZE / BLOCK);
    const path = join(dataDir, migrationId, 'disk.img');
    expect(sha(await readFile(path))).toBe(sha(image));
    await expectDigestsMatch(migrationId, image, SIZE);
    const resentShare = sender.stats.resentBytes / SIZE;
    console.log(
      `delta-apply kill -9 at ${((killedAt / SIZE) * 100).toFixed(0)} %: down ${(downMs / 1000).toFixed(2)} s, ` +
        `re-sent ${(sender.stats.resentBytes / 2 ** 20).toFixed(2)} MiB (${(resentShare * 100).toFixed(2)} % of the image), ` +
        `${sender.stats.probes} probes`,
    );
    expect(sender.stats.resentBytes).toBeLessThanOrEqual(0.05 * SIZE);
  });

  it('stops cleanly on SIGTERM mid-transfer, then serves every migration again after a restart', async () => {
    const migrationId = randomUUID();
    const half = image.subarray(0, SIZE / 2);
    await call<PrepareDiskReply>(DiskVerb.Prepare, { migrationId, sizeBytes: half.length });
    const known = (await readdir(dataDir)).length;
    let stopped = false;
    const { sender } = await push(migrationId, half, async (sent) => {
      if (stopped || sent < half.length / 2) return;
      stopped = true;
      await service.stop(10_000);
      // Nest re-raises the signal once its shutdown hooks are done; SIGKILL would mean they hung.
      expect(service.child.signalCode ?? service.child.exitCode).toBe('SIGTERM');
      expect(printed()).toMatch(new RegExp(`stopped ${known} receiver\\(s\\)`));
      service = await launch();
      expect(Number(READY.exec(printed())?.[1])).toBe(known);
    });
    expect(stopped).toBe(true);
    expect(sender.stats.resentBytes).toBeLessThanOrEqual(WINDOW + FRAME_SPAN);
    await waitForRemoteInterest(sites.a, subject(DiskVerb.Status));
    const status = await waitUntil(
      async () => {
        const s = await call<DiskStatusReply>(DiskVerb.Status, { migrationId });
        return s.finished && s;
      },
      { what: 'finished status after a graceful restart', timeoutMs: 5_000 },
    );
    expect(status.presentBlocks).toBe(half.length / BLOCK);
    expect(sha(await readFile(join(dataDir, migrationId, 'disk.img')))).toBe(sha(half));

    for (const id of await readdir(dataDir)) {
      const other = await call<DiskStatusReply>(DiskVerb.Status, { migrationId: id });
      expect(other).toMatchObject({ finished: true, cursor: other.sizeBytes, presentBlocks: other.sizeBytes / BLOCK });
      // A finished migration keeps its image on release unless asked otherwise.
      const released = await call<ReleaseDiskReply>(DiskVerb.Release, { migrationId: id });
      expect(released.imageDeleted).toBe(false);
      expect(await readdir(join(dataDir, id))).toEqual(['disk.img']);
    }
  });
});

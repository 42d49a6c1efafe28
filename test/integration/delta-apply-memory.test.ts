import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, statfs } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from '@nats-io/nats-core';
import { connect } from '@nats-io/transport-node';
import { ChunkEncoder, createRng, mixedDataset, mutatePage } from '@wanmig/codec';
import { SimDriver, SimWorkload, type SimSourceVm } from '@wanmig/hypervisor';
import {
  callControl,
  controlSubject,
  DeviceStateStreamId,
  encodeFrame,
  ErrorCode,
  FrameFlag,
  MemoryStreamId,
  MemoryVerb,
  PAGE_SIZE,
  ServiceName,
  StreamKind,
  Subjects,
  WanmigError,
  type MemoryStatusReply,
  type PrepareMemoryReply,
  type ReleaseMemoryReply,
  type ResumeVmReply,
  type ResumeVmRequest,
} from '@wanmig/protocol';
import { RecordStreamWriter, StreamSender } from '@wanmig/stream';
import {
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
const RAM = 32 * 1024 * 1024;
const WINDOW = 2 * 1024 * 1024;
const FRAME_SPAN = 256 * 1024;
/** Pages re-sent with small changes after the first pass (pre-copy's second round). */
const DIRTY_PAGES = 1024;
const READY = /delta-apply ready site=site-b .*memory=(\d+)/;
const SIM_VM = 'sim-e2e';
const SIM_RAM = 64 * 1024 * 1024;
const sha = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

describe('delta-apply memory and VM resume (built, behind the emulated WAN at site B)', () => {
  let sites: TwoSites;
  let ncA: NatsConnection;
  let dataDir: string;
  /** Runtime directories of the sim guests: the source's (this process) and the destination's (delta-apply). */
  let sourceGuests: string;
  let destinationGuests: string;
  let service: ServiceProcess;
  /** Everything the current service process printed. */
  let output: string[] = [];
  let source: Buffer;

  const subject = (verb: MemoryVerb): string => controlSubject(SITE, ServiceName.DeltaApply, verb);
  const call = <T>(verb: MemoryVerb, body: object): Promise<T> => callControl<T>(ncA, subject(verb), body);
  const status = (migrationId: string): Promise<MemoryStatusReply> =>
    call<MemoryStatusReply>(MemoryVerb.Status, { migrationId });
  const launch = (): Promise<ServiceProcess> => {
    output = [];
    return ServiceProcess.start({
      service: 'delta-apply',
      args: ['--nats', sites.b.url, '--site', SITE, '--data-dir', dataDir, '--sim-runtime-dir', destinationGuests],
      readyPattern: READY,
      log: (line) => output.push(line),
    });
  };
  const printed = (): string => output.join('\n');
  const errorOf = async (work: Promise<unknown>): Promise<WanmigError> => {
    try {
      await work;
    } catch (err) {
      if (err instanceof WanmigError) return err;
      throw err;
    }
    throw new Error('expected a typed error');
  };

  /**
   * Pre-copy as the source does it, from site A: every page once, then `DIRTY_PAGES` pages changed
   * a little and sent again (the encoder's cache makes most of them XBZRLE deltas). `source` is
   * updated in place. `atOffset` runs after each frame span of the first pass.
   */
  async function pushPages(migrationId: string, ram: Buffer, atOffset?: (sent: number) => Promise<void>) {
    const sender = new StreamSender({
      nc: ncA,
      migrationId,
      streamId: MemoryStreamId,
      kind: StreamKind.Memory,
      windowBytes: WINDOW,
    });
    const encoder = new ChunkEncoder();
    const writer = new RecordStreamWriter(sender, encoder, FRAME_SPAN);
    await sender.open();
    for (let offset = 0; offset < ram.length; offset += FRAME_SPAN) {
      await writer.write(offset, ram.subarray(offset, offset + FRAME_SPAN));
      await atOffset?.(offset + FRAME_SPAN);
    }
    const rng = createRng(99);
    for (let i = 0; i < DIRTY_PAGES; i++) {
      const offset = rng.int(ram.length / PAGE_SIZE) * PAGE_SIZE;
      const page = mutatePage(rng, ram.subarray(offset, offset + PAGE_SIZE), 0.02);
      page.copy(ram, offset);
      await writer.write(offset, page);
    }
    await writer.finish();
    sender.close();
    return { sender, encoder };
  }

  /** The device state at stop-and-copy: one raw frame at offset 0. */
  async function pushDeviceState(migrationId: string, blob: Buffer): Promise<void> {
    const sender = new StreamSender({
      nc: ncA,
      migrationId,
      streamId: DeviceStateStreamId,
      kind: StreamKind.DeviceState,
      windowBytes: WINDOW,
    });
    await sender.open();
    await sender.send({ offset: 0, length: blob.length, flags: FrameFlag.End, payload: blob });
    await sender.drain();
    sender.close();
  }

  beforeAll(async () => {
    serviceEntry('delta-apply'); // fails at once, and says so, when dist/ has not been built
    sites = await startTwoSites({ delayMs: 10, bandwidthBps: 200e6 });
    ncA = await connect({ servers: sites.a.url });
    dataDir = await mkdtemp(join(tmpdir(), 'wanmig-delta-apply-memory-'));
    sourceGuests = await mkdtemp(join(tmpdir(), 'wanmig-sim-a-'));
    destinationGuests = await mkdtemp(join(tmpdir(), 'wanmig-sim-b-'));
    source = Buffer.concat([...mixedDataset({ size: RAM, seed: 23, chunkSize: 1024 * 1024 })].map((c) => c.data));
    service = await launch();
    // Site A learns of site B's subscriptions one WAN delay later.
    await waitForRemoteInterest(sites.a, subject(MemoryVerb.Release));
  });

  afterAll(async () => {
    await service?.kill9();
    // A destination guest outlives delta-apply (detached): stop one a failed test left running.
    if (destinationGuests) {
      const leftover = await new SimDriver({ runtimeDir: destinationGuests }).attach(SIM_VM).catch(() => undefined);
      await leftover?.stop();
    }
    await ncA?.close();
    await sites?.stop();
    for (const dir of [dataDir, sourceGuests, destinationGuests])
      if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('prepares a sparse RAM file, receives pages (with XBZRLE re-sends) and the device state byte for byte', async () => {
    const migrationId = randomUUID();
    const ramPath = join(dataDir, migrationId, 'ram.img');
    const prepared = await call<PrepareMemoryReply>(MemoryVerb.Prepare, { migrationId, ramBytes: RAM });
    expect(prepared).toEqual({ ramPath, resumed: false, nextSeq: 0 });
    const created = await stat(ramPath);
    expect(created.size).toBe(RAM);
    expect(created.blocks * 512).toBeLessThan(1024 * 1024); // sparse
    expect(await call(MemoryVerb.Prepare, { migrationId, ramBytes: RAM })).toEqual({ ...prepared, resumed: true });
    expect((await errorOf(call(MemoryVerb.Prepare, { migrationId, ramBytes: RAM * 2 }))).code).toBe(ErrorCode.Conflict);

    const ram = Buffer.from(source);
    const started = performance.now();
    const { sender, encoder } = await pushPages(migrationId, ram);
    const blob = randomBytes(48 * 1024);
    await pushDeviceState(migrationId, blob);
    const seconds = (performance.now() - started) / 1000;

    const xbzrle = encoder.totals.byEncoding.xbzrle.pages;
    expect(xbzrle).toBeGreaterThan(DIRTY_PAGES / 2);
    const reply = await waitUntil(
      async () => {
        const s = await status(migrationId);
        return s.finished && s;
      },
      { what: 'memory stream finished', timeoutMs: 5_000 },
    );
    expect(reply).toEqual({
      migrationId,
      ramPath,
      ramBytes: RAM,
      pageSize: PAGE_SIZE,
      nextSeq: sender.sequence,
      cursor: expect.any(Number) as unknown,
      bytesApplied: expect.any(Number) as unknown,
      finished: true,
      rejectedFrames: 0,
      deviceStateBytes: blob.length,
      deviceStateSha256: sha(blob),
      running: false,
    });
    expect(sha(await readFile(ramPath))).toBe(sha(ram));
    expect(await readFile(join(dataDir, migrationId, 'device-state.bin'))).toEqual(blob);
    // Zero pages were never written: the RAM file stays sparse where the source is zero.
    expect((await stat(ramPath)).blocks * 512).toBeLessThan(RAM * 0.8);
    console.log(
      `delta-apply memory: ${RAM >> 20} MiB + ${DIRTY_PAGES} re-sent pages (${xbzrle} as XBZRLE) over ` +
        `10 ms / 200 Mbit/s in ${seconds.toFixed(2)} s, ${(sender.stats.bytesSent / 2 ** 20).toFixed(1)} MiB of frames`,
    );

    const released = await call<ReleaseMemoryReply>(MemoryVerb.Release, { migrationId });
    expect(released).toEqual({ migrationId, ramPath, ramDeleted: false, vmStopped: false });
    expect(await readdir(join(dataDir, migrationId))).toEqual(['ram.img']);
    expect((await errorOf(status(migrationId))).code).toBe(ErrorCode.NotFound);
  });

  it('counts a page frame addressed past the end of RAM as rejected and writes nothing of it', async () => {
    const migrationId = randomUUID();
    const ramBytes = 1024 * 1024;
    const ramPath = join(dataDir, migrationId, 'ram.img');
    await call(MemoryVerb.Prepare, { migrationId, ramBytes });
    await waitForRemoteInterest(sites.a, Subjects.data(migrationId, MemoryStreamId));
    const outside = (headerOffset: number): Buffer => {
      const encoder = new ChunkEncoder();
      encoder.encode(ramBytes, randomBytes(PAGE_SIZE));
      const { records } = encoder.takeBatch();
      return encodeFrame(
        {
          kind: StreamKind.Memory,
          flags: FrameFlag.Records,
          migrationId,
          streamId: MemoryStreamId,
          seq: 0,
          offset: headerOffset,
          length: PAGE_SIZE,
        },
        records,
      );
    };
    // One frame whose header says where it lands, one whose header lies and whose record does not.
    ncA.publish(Subjects.data(migrationId, MemoryStreamId), outside(ramBytes));
    await waitUntil(async () => (await status(migrationId)).rejectedFrames === 1, {
      what: 'first frame rejected',
      timeoutMs: 5_000,
    });
    ncA.publish(Subjects.data(migrationId, MemoryStreamId), outside(0));
    const rejected = await waitUntil(
      async () => {
        const s = await status(migrationId);
        return s.rejectedFrames === 2 && s;
      },
      { what: 'second frame rejected', timeoutMs: 5_000 },
    );
    expect(rejected).toMatchObject({ nextSeq: 0, bytesApplied: 0 });
    const file = await stat(ramPath);
    expect(file.size).toBe(ramBytes);
    expect(file.blocks).toBe(0);
    expect(printed()).not.toMatch(/memory receive .* failed/);

    // The stream is not broken: the real pages still arrive.
    const ram = source.subarray(0, ramBytes);
    const sender = new StreamSender({
      nc: ncA,
      migrationId,
      streamId: MemoryStreamId,
      kind: StreamKind.Memory,
      windowBytes: WINDOW,
    });
    const writer = new RecordStreamWriter(sender, new ChunkEncoder(), FRAME_SPAN);
    await sender.open();
    await writer.write(0, ram);
    await writer.finish();
    sender.close();
    expect(sha(await readFile(ramPath))).toBe(sha(ram));
    expect(await status(migrationId)).toMatchObject({ rejectedFrames: 2, finished: true });
    await call(MemoryVerb.Release, { migrationId, deleteRam: true });
    expect(existsSync(join(dataDir, migrationId))).toBe(false);
  });

  it('refuses bad requests with typed codes and leaves no files behind', async () => {
    const before = (await readdir(dataDir)).sort();
    const migrationId = randomUUID();
    const codeOf = async (verb: MemoryVerb, body: object): Promise<string> => (await errorOf(call(verb, body))).code;
    expect(await codeOf(MemoryVerb.Prepare, { migrationId: 'nope', ramBytes: -1 })).toBe(ErrorCode.InvalidRequest);
    expect(await codeOf(MemoryVerb.Prepare, { migrationId, ramBytes: 8192, colour: 'red' })).toBe(
      ErrorCode.InvalidRequest,
    );
    expect(await codeOf(MemoryVerb.Prepare, { migrationId, ramBytes: 8192, pageSize: 2048 })).toBe(
      ErrorCode.InvalidRequest,
    );
    expect(await codeOf(MemoryVerb.Prepare, { migrationId, ramBytes: 8192 + 100 })).toBe(ErrorCode.InvalidRequest);
    expect(await codeOf(MemoryVerb.Prepare, { migrationId: migrationId.toUpperCase(), ramBytes: 8192 })).toBe(
      ErrorCode.InvalidRequest,
    );
    const fs = await statfs(dataDir);
    const beyond = Math.ceil((fs.bavail * fs.bsize + 1024 ** 3) / PAGE_SIZE) * PAGE_SIZE;
    const full = await errorOf(call(MemoryVerb.Prepare, { migrationId, ramBytes: beyond }));
    expect(full.code).toBe(ErrorCode.NoSpace);
    expect(full.message).toMatch(/not enough room/);
    for (const verb of [MemoryVerb.Status, MemoryVerb.Release]) {
      expect(await codeOf(verb, { migrationId })).toBe(ErrorCode.NotFound);
    }
    const resume = { migrationId, vmId: 'vm-x', deviceStateBytes: 10, deviceStateSha256: '0'.repeat(64) };
    expect(await codeOf(MemoryVerb.Resume, resume)).toBe(ErrorCode.NotFound);
    expect(await codeOf(MemoryVerb.Resume, { ...resume, deviceStateSha256: 'xyz' })).toBe(ErrorCode.InvalidRequest);
    expect((await readdir(dataDir)).sort()).toEqual(before);
  });

  it('refuses vm.resume when the device state differs in sha256 or size, and starts nothing', async () => {
    const migrationId = randomUUID();
    await call(MemoryVerb.Prepare, { migrationId, ramBytes: 1024 * 1024 });
    const request: ResumeVmRequest = {
      migrationId,
      vmId: 'vm-1',
      driver: 'sim',
      deviceStateBytes: 4096,
      deviceStateSha256: '0'.repeat(64),
    };
    const missing = await errorOf(call(MemoryVerb.Resume, request));
    expect(missing.code).toBe(ErrorCode.InvalidRequest);
    expect(missing.message).toMatch(/no device state received/);

    const blob = randomBytes(4096);
    await pushDeviceState(migrationId, blob);
    const wrongSha = await errorOf(call(MemoryVerb.Resume, request));
    expect(wrongSha.code).toBe(ErrorCode.InvalidRequest);
    expect(wrongSha.message).toMatch(new RegExp(`sha256 ${sha(blob)}, not deviceStateSha256 0{64}`));
    const wrongSize = await errorOf(
      call(MemoryVerb.Resume, { ...request, deviceStateBytes: 4097, deviceStateSha256: sha(blob) }),
    );
    expect(wrongSize.code).toBe(ErrorCode.InvalidRequest);
    expect(wrongSize.message).toMatch(/is 4096 bytes, not deviceStateBytes 4097/);

    expect(printed()).not.toMatch(/starting incoming VM/);
    expect(await status(migrationId)).toMatchObject({ running: false, deviceStateBytes: 4096 });
    // Still receiving: the source may send the state again, and the new one replaces the old.
    const again = randomBytes(2048);
    await pushDeviceState(migrationId, again);
    expect(await status(migrationId)).toMatchObject({ deviceStateBytes: 2048, deviceStateSha256: sha(again) });
    await call(MemoryVerb.Release, { migrationId, deleteRam: true });
  });

  it('survives kill -9 half way through the pages: resumes from its watermark and completes', async () => {
    const migrationId = randomUUID();
    await call(MemoryVerb.Prepare, { migrationId, ramBytes: RAM });
    const ram = Buffer.from(source);
    let killedAt = -1;
    const { sender } = await pushPages(migrationId, ram, async (sent) => {
      if (killedAt >= 0 || sent < RAM / 2) return;
      killedAt = sent;
      await service.kill9();
      service = await launch();
      expect(printed()).toMatch(new RegExp(`resumed memory of ${migrationId}: seq [1-9]\\d*`));
      expect(Number(READY.exec(printed())?.[1])).toBeGreaterThanOrEqual(1);
    });
    expect(killedAt).toBeGreaterThan(0);
    await waitForRemoteInterest(sites.a, subject(MemoryVerb.Status));
    const reply = await waitUntil(
      async () => {
        const s = await status(migrationId);
        return s.finished && s;
      },
      { what: 'finished after the restart', timeoutMs: 5_000 },
    );
    expect(reply.nextSeq).toBe(sender.sequence);
    expect(sha(await readFile(join(dataDir, migrationId, 'ram.img')))).toBe(sha(ram));
    console.log(
      `delta-apply memory kill -9 at ${((killedAt / RAM) * 100).toFixed(0)} %: ` +
        `re-sent ${(sender.stats.resentBytes / 2 ** 20).toFixed(2)} MiB, ${sender.stats.probes} probes`,
    );
    expect(sender.stats.resentBytes).toBeLessThanOrEqual(0.1 * RAM);
    await call(MemoryVerb.Release, { migrationId, deleteRam: true });
  });

  it('moves a real sim guest: pre-copy from the running source, stop-and-copy, resume at site B', async () => {
    const source = await new SimDriver({ runtimeDir: sourceGuests }).launch({
      vmId: SIM_VM,
      ramBytes: SIM_RAM,
      workload: SimWorkload.Web,
      seed: 5,
    });
    try {
      const migrationId = randomUUID();
      const ramPath = join(dataDir, migrationId, 'ram.img');
      await call(MemoryVerb.Prepare, { migrationId, ramBytes: SIM_RAM });
      const { dirtyPages, sourceRam } = await precopy(migrationId, source);
      const state = await source.deviceState();
      const before = { k3: await source.monitor('GET k3'), counter: Number(await source.monitor('COUNTER')) };
      await pushDeviceState(migrationId, state.blob);
      await waitUntil(async () => (await status(migrationId)).finished, { what: 'pages durable', timeoutMs: 5_000 });
      expect(sha(await readFile(ramPath))).toBe(sha(sourceRam));

      const request: ResumeVmRequest = {
        migrationId,
        vmId: SIM_VM,
        driver: 'sim',
        deviceStateBytes: state.blob.length,
        deviceStateSha256: state.sha256,
      };
      const started = performance.now();
      const resumed = await call<ResumeVmReply>(MemoryVerb.Resume, request);
      const resumeMs = performance.now() - started;
      expect(resumed.vmId).toBe(SIM_VM);
      expect(resumed.serviceAddress).not.toBe(source.serviceAddress);
      // The guest at site B answers from the migrated RAM: the same key-value area, the counter goes on.
      const [k3, counter] = await askGuest(resumed.serviceAddress, ['GET k3', 'COUNTER']);
      expect(k3).toBe(before.k3);
      expect(Number(counter)).toBeGreaterThanOrEqual(before.counter);
      expect(await status(migrationId)).toMatchObject({
        running: true,
        vmId: SIM_VM,
        serviceAddress: resumed.serviceAddress,
        resumedAt: resumed.resumedAt,
      });
      // A retry of the same resume answers the same; nothing more is received into a running VM's RAM.
      expect(await call(MemoryVerb.Resume, request)).toEqual(resumed);
      expect((await errorOf(call(MemoryVerb.Prepare, { migrationId, ramBytes: SIM_RAM }))).code).toBe(
        ErrorCode.Conflict,
      );
      console.log(
        `delta-apply sim guest: ${SIM_RAM >> 20} MiB RAM + ${dirtyPages} dirty pages at stop-and-copy, ` +
          `${state.blob.length} bytes of device state, vm.resume in ${resumeMs.toFixed(0)} ms`,
      );

      // The migrated VM does not depend on delta-apply: it outlives a kill -9, and the restarted
      // service knows it runs and receives nothing into its RAM.
      await service.kill9();
      service = await launch();
      expect(printed()).toContain(`resumed memory of ${migrationId}: VM ${SIM_VM} runs from it, not receiving`);
      expect(Number((await askGuest(resumed.serviceAddress, ['COUNTER']))[0])).toBeGreaterThanOrEqual(Number(counter));
      await waitForRemoteInterest(sites.a, subject(MemoryVerb.Release));
      expect(await status(migrationId)).toMatchObject({ running: true, deviceStateSha256: state.sha256 });

      // A rollback after the move: the VM at site B (found by id) is stopped and its RAM deleted.
      const released = await call<ReleaseMemoryReply>(MemoryVerb.Release, { migrationId, deleteRam: true });
      expect(released).toMatchObject({ ramDeleted: true, vmStopped: true });
      await expect(askGuest(resumed.serviceAddress, ['PING'])).rejects.toThrow();
      expect(existsSync(join(dataDir, migrationId))).toBe(false);
    } finally {
      await source.stop();
    }
  });

  /** One pre-copy round while the guest runs, then pause and send what it dirtied meanwhile. */
  async function precopy(migrationId: string, vm: SimSourceVm) {
    const memory = vm.memory();
    await memory.drainDirty(); // starts the dirty log
    const sender = new StreamSender({
      nc: ncA,
      migrationId,
      streamId: MemoryStreamId,
      kind: StreamKind.Memory,
      windowBytes: WINDOW,
    });
    const writer = new RecordStreamWriter(sender, new ChunkEncoder(), FRAME_SPAN);
    await sender.open();
    for (let offset = 0; offset < SIM_RAM; offset += FRAME_SPAN) {
      await writer.write(offset, await memory.read(offset, FRAME_SPAN));
    }
    await vm.pause();
    const dirty = await memory.drainDirty();
    for (const range of dirty.byteRanges({ maxBytes: FRAME_SPAN })) {
      await writer.write(range.offset, await memory.read(range.offset, range.length));
    }
    await writer.finish();
    sender.close();
    return { dirtyPages: dirty.count, sourceRam: await memory.read(0, SIM_RAM) };
  }
});

/** Sends request lines to a guest's TCP service and returns its reply lines. */
function askGuest(address: string, lines: string[]): Promise<string[]> {
  const [host, port] = address.split(':');
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host, port: Number(port) });
    const replies: string[] = [];
    let buffered = '';
    const timer = setTimeout(() => socket.destroy(new Error(`no answer from ${address}`)), 5_000);
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(lines.map((line) => `${line}\n`).join('')));
    socket.on('data', (chunk: string) => {
      const parts = (buffered + chunk).split('\n');
      buffered = parts.pop()!;
      replies.push(...parts);
      if (replies.length >= lines.length) {
        clearTimeout(timer);
        socket.end();
        resolve(replies.slice(0, lines.length));
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`${address} closed after ${replies.length} of ${lines.length} replies`));
    });
  });
}

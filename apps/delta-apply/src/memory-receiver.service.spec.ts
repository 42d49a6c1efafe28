import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Logger } from '@nestjs/common';
import { ChunkEncoder } from '@wanmig/codec';
import type { DeviceState, HypervisorDriver, IncomingVm, IncomingVmSpec, SourceVm } from '@wanmig/hypervisor';
import {
  DeviceStateStreamId,
  encodeFrame,
  ErrorCode,
  FrameFlag,
  MemoryStreamId,
  StreamKind,
  Subjects,
  WanmigError,
  type ResumeVmRequest,
} from '@wanmig/protocol';
import { ramDigest, RAM_DIGEST_REGION_BYTES, RegionDigester, shortRegionDigests } from '@wanmig/stream';
import { waitUntil } from '@wanmig/testing';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { DeltaApplyConfig } from './delta-apply.config.js';
import { sha256 } from './device-state.sink.js';
import { DeviceStateMismatchError, MigrationConflictError, VmResumeError } from './errors.js';
import { FakeDataPlane } from './fake-data-plane.spec-helper.js';
import { MemoryReceiverService } from './memory-receiver.service.js';
import { RoomLedger } from './room.ledger.js';

const RAM = 64 * 1024;
const roomy = () => Promise.resolve({ bavail: 2 ** 30, bsize: 4096 });

/** A driver that records what it was asked; `failResume` makes the next resume throw. */
class FakeDriver implements HypervisorDriver {
  readonly name = 'sim';
  readonly started: IncomingVmSpec[] = [];
  readonly resumed: DeviceState[] = [];
  readonly stopped: string[] = [];
  /** VMs found by id and released (a rollback after a restart). */
  readonly released: string[] = [];
  failResume?: Error;
  /** What attach() answers for a VM that is gone. */
  gone?: WanmigError;

  attach(vmId: string): Promise<SourceVm> {
    if (this.gone) return Promise.reject(this.gone);
    return Promise.resolve({
      release: () => {
        this.released.push(vmId);
        return Promise.resolve();
      },
    } as SourceVm);
  }

  startIncoming(spec: IncomingVmSpec): Promise<IncomingVm> {
    this.started.push(spec);
    const vm: IncomingVm = {
      describe: () =>
        Promise.resolve({
          vmId: spec.vmId,
          ramBytes: spec.ramBytes,
          pageSize: 4096,
          diskBytes: 0,
          nics: [],
          serviceAddress: `127.0.0.1:${spec.servicePort ?? 4000}`,
          state: 'running',
        }),
      resume: (state) => {
        this.resumed.push(state);
        const failure = this.failResume;
        this.failResume = undefined;
        return failure ? Promise.reject(failure) : Promise.resolve();
      },
      stop: () => {
        this.stopped.push(spec.vmId);
        return Promise.resolve();
      },
    };
    return Promise.resolve(vm);
  }
}

describe('MemoryReceiverService', () => {
  let dataDir: string;
  let plane: FakeDataPlane;
  let driver: FakeDriver;
  let service: MemoryReceiverService;
  const start = async (withDriver: HypervisorDriver = driver): Promise<MemoryReceiverService> => {
    const config: DeltaApplyConfig = {
      dataDir,
      site: 'site-b',
      natsUrl: '',
      presentMapIntervalMs: 0,
      simRuntimeDir: join(dataDir, 'sim'),
    };
    const started = new MemoryReceiverService(config, roomy, plane.connection, new RoomLedger(), withDriver);
    await started.onApplicationBootstrap();
    return started;
  };
  const frame = (migrationId: string, streamId: number, seq: number, offset: number, payload: Buffer, flags = 0) =>
    encodeFrame(
      {
        kind: streamId === MemoryStreamId ? StreamKind.Memory : StreamKind.DeviceState,
        flags,
        migrationId,
        streamId,
        seq,
        offset,
        length: payload.length,
      },
      payload,
    );
  const pageFrame = (migrationId: string, seq: number, offset: number, data: Buffer): Buffer => {
    const encoder = new ChunkEncoder();
    encoder.encode(offset, data);
    const { records } = encoder.takeBatch();
    return encodeFrame(
      {
        kind: StreamKind.Memory,
        flags: FrameFlag.Records | FrameFlag.End,
        migrationId,
        streamId: MemoryStreamId,
        seq,
        offset,
        length: data.length,
      },
      records,
    );
  };
  /** Prepares a migration and delivers RAM pages and a device state, both durable when this resolves. */
  const prepared = async (ram = randomBytes(RAM), state = randomBytes(2000), verifyRam = false) => {
    const migrationId = randomUUID();
    await service.prepare({ migrationId, ramBytes: RAM, pageSize: 4096, ...(verifyRam ? { verifyRam } : {}) });
    plane.deliver(Subjects.data(migrationId, MemoryStreamId), pageFrame(migrationId, 0, 0, ram));
    plane.deliver(
      Subjects.data(migrationId, DeviceStateStreamId),
      frame(migrationId, DeviceStateStreamId, 0, 0, state, FrameFlag.End),
    );
    await waitUntil(
      () => {
        const s = service.status({ migrationId });
        return s.finished && s.deviceStateBytes === state.length;
      },
      { what: 'pages and device state durable', timeoutMs: 5_000 },
    );
    const request: ResumeVmRequest = {
      migrationId,
      vmId: 'vm-1',
      driver: 'sim',
      deviceStateBytes: state.length,
      deviceStateSha256: sha256(state),
      servicePort: 4100,
    };
    return { migrationId, ram, state, request };
  };
  const errorOf = async (work: Promise<unknown>): Promise<WanmigError> => {
    const err: unknown = await work.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WanmigError);
    return err as WanmigError;
  };

  beforeAll(() => Logger.overrideLogger(false));
  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'wanmig-memory-service-'));
    plane = new FakeDataPlane();
    driver = new FakeDriver();
    service = await start();
  });
  afterEach(async () => {
    await service.beforeApplicationShutdown();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('receives pages into the RAM file and refuses a page frame outside RAM without writing it', async () => {
    const { migrationId, ram } = await prepared();
    const path = join(dataDir, migrationId, 'ram.img');
    expect(await readFile(path)).toEqual(ram);
    plane.deliver(Subjects.data(migrationId, MemoryStreamId), pageFrame(migrationId, 1, RAM, randomBytes(4096)));
    await waitUntil(() => service.status({ migrationId }).rejectedFrames === 1, {
      what: 'the frame refused',
      timeoutMs: 5_000,
    });
    expect(await readFile(path)).toEqual(ram);
    expect(service.status({ migrationId })).toMatchObject({
      nextSeq: 1,
      cursor: RAM,
      bytesApplied: RAM,
      running: false,
    });
  });

  it('reports a stream that failed for good, and receives again on the next prepare', async () => {
    const migrationId = randomUUID();
    await service.prepare({ migrationId, ramBytes: RAM, pageSize: 4096 });
    // The same bad frame again and again fails the stream for good.
    for (let i = 1; i <= 5; i++) {
      plane.deliver(Subjects.data(migrationId, MemoryStreamId), pageFrame(migrationId, 0, RAM, randomBytes(4096)));
      await waitUntil(() => service.status({ migrationId }).rejectedFrames === i, {
        what: `refusal ${i}`,
        timeoutMs: 5_000,
      });
    }
    await waitUntil(() => service.status({ migrationId }).failure, { what: 'failure reported', timeoutMs: 5_000 });
    expect(service.status({ migrationId }).failure).toMatchObject({ code: ErrorCode.RecordCorrupt });
    expect(await service.prepare({ migrationId, ramBytes: RAM, pageSize: 4096 })).toMatchObject({
      resumed: true,
      nextSeq: 0,
    });
    expect(service.status({ migrationId })).toMatchObject({ rejectedFrames: 0, nextSeq: 0 });
    expect(service.status({ migrationId }).failure).toBeUndefined();
    const ram = randomBytes(RAM);
    plane.deliver(Subjects.data(migrationId, MemoryStreamId), pageFrame(migrationId, 0, 0, ram));
    await waitUntil(() => service.status({ migrationId }).finished, {
      what: 'pages after the failure',
      timeoutMs: 5_000,
    });
    expect(await readFile(join(dataDir, migrationId, 'ram.img'))).toEqual(ram);
  });

  it('refuses a resume whose device state differs, and starts nothing', async () => {
    const { migrationId, request } = await prepared();
    const wrongSha = await errorOf(service.resume({ ...request, deviceStateSha256: '0'.repeat(64) }));
    expect(wrongSha).toBeInstanceOf(DeviceStateMismatchError);
    expect(wrongSha).toMatchObject({ code: ErrorCode.InvalidRequest, mismatch: 'sha256' });
    const wrongSize = await errorOf(service.resume({ ...request, deviceStateBytes: 1999 }));
    expect(wrongSize).toMatchObject({ code: ErrorCode.InvalidRequest, mismatch: 'size' });
    expect(driver.started).toEqual([]);
    // Still receiving: the source can send the device state again.
    expect(plane.subjects).toContain(Subjects.data(migrationId, DeviceStateStreamId));
    expect(service.status({ migrationId }).running).toBe(false);
  });

  it('resumes the VM on the received RAM and state, answers a retry the same, and keeps it on release', async () => {
    const { migrationId, state, request } = await prepared();
    const reply = await service.resume(request);
    expect(reply).toEqual({ vmId: 'vm-1', serviceAddress: '127.0.0.1:4100', resumedAt: expect.any(Number) as unknown });
    expect(driver.started).toEqual([
      {
        vmId: 'vm-1',
        ramPath: join(dataDir, migrationId, 'ram.img'),
        ramBytes: RAM,
        diskUri: undefined,
        servicePort: 4100,
      },
    ]);
    expect(driver.resumed).toEqual([{ blob: state, sha256: sha256(state) }]);
    // Nothing is received into a running VM's RAM any more.
    expect(plane.subjects.filter((s) => s.includes(migrationId))).toEqual([]);
    expect(await service.resume(request)).toEqual(reply);
    expect(driver.started).toHaveLength(1);
    expect(await errorOf(service.resume({ ...request, vmId: 'vm-2' }))).toBeInstanceOf(MigrationConflictError);
    expect(await errorOf(service.prepare({ migrationId, ramBytes: RAM, pageSize: 4096 }))).toBeInstanceOf(
      MigrationConflictError,
    );
    expect(service.status({ migrationId })).toMatchObject({ running: true, vmId: 'vm-1', resumedAt: reply.resumedAt });

    // A restarted service knows the VM runs and does not receive into its RAM.
    await service.beforeApplicationShutdown();
    expect(driver.stopped).toEqual([]);
    service = await start();
    expect(service.status({ migrationId })).toMatchObject({
      running: true,
      deviceStateBytes: state.length,
      nextSeq: 1,
    });
    expect(plane.subjects.filter((s) => s.includes(migrationId))).toEqual([]);
    expect(await service.release({ migrationId })).toEqual({
      migrationId,
      ramPath: join(dataDir, migrationId, 'ram.img'),
      ramDeleted: false,
      vmStopped: false,
    });
    expect(driver.released).toEqual([]);
    expect(await readdir(join(dataDir, migrationId))).toEqual(['ram.img']);
  });

  it('checks what a resume would without running the VM, and the resume after it only runs it', async () => {
    const { migrationId, ram, state, request } = await prepared();
    const wrongState = await errorOf(service.check({ ...request, deviceStateSha256: '0'.repeat(64) }));
    expect(wrongState).toBeInstanceOf(DeviceStateMismatchError);
    const wrongRam = await errorOf(service.check({ ...request, ramSha256: '0'.repeat(64) }));
    expect(wrongRam).toMatchObject({ code: ErrorCode.DigestMismatch });
    expect(wrongRam.message).toMatch(/differs from the source at pause/);
    // With the source's region digests, the error names the regions that differ and where they start.
    const regions = new RegionDigester(RAM_DIGEST_REGION_BYTES);
    regions.update(ram);
    const named = shortRegionDigests(regions.finish()).map((d, i) => (i === 0 ? '0'.repeat(16) : d));
    const wrongRegion = await errorOf(service.check({ ...request, ramSha256: '0'.repeat(64), ramRegions: named }));
    expect(wrongRegion.message).toMatch(
      new RegExp(`differs from the source at pause in 1 of ${named.length} regions of 4 MiB \\(first at byte 0x0\\)`),
    );
    expect(driver.started).toEqual([]);

    const digester = new RegionDigester(RAM_DIGEST_REGION_BYTES);
    digester.update(ram);
    const checked = await service.check({ ...request, ramSha256: ramDigest(digester.finish()) });
    expect(checked).toMatchObject({ migrationId, ramVerified: true });
    // Ready to run, not running: started incoming, nothing resumed, nothing received any more.
    expect(driver.started).toHaveLength(1);
    expect(driver.resumed).toEqual([]);
    expect(service.status({ migrationId }).running).toBe(false);
    expect(plane.subjects.filter((s) => s.includes(migrationId))).toEqual([]);

    await service.resume(request);
    expect(driver.started).toHaveLength(1);
    expect(driver.resumed).toEqual([{ blob: state, sha256: sha256(state) }]);
    expect(await errorOf(service.check(request))).toBeInstanceOf(MigrationConflictError);
  });

  it('reports the RAM digest it computed since the stream end, for the source to compare, once done', async () => {
    const ram = randomBytes(RAM);
    const { migrationId, request } = await prepared(ram, randomBytes(2000), true);
    const digester = new RegionDigester(RAM_DIGEST_REGION_BYTES);
    digester.update(ram);
    // A check never waits for the digest: repeated (it changes nothing) until the digest is done.
    let checked = await service.check(request);
    await waitUntil(async () => (checked = await service.check(request)).ramSha256 !== undefined, {
      what: 'the digest reported',
      timeoutMs: 5_000,
    });
    expect(checked).toMatchObject({ migrationId, ramSha256: ramDigest(digester.finish()) });
    expect(checked.ramVerified).toBeUndefined();
    expect(driver.resumed).toEqual([]);
    // The resume does not report it again: it only runs the VM.
    expect((await service.resume(request)) as object).not.toHaveProperty('ramSha256');
  });

  it('stops the VM when the driver fails, keeps the files, and can receive and resume again', async () => {
    const { migrationId, request } = await prepared();
    driver.failResume = new Error('guest crashed');
    const failed = await errorOf(service.resume(request));
    expect(failed).toBeInstanceOf(VmResumeError);
    expect(failed.code).toBe(ErrorCode.Internal);
    expect(failed.message).toMatch(/sim driver did not resume VM vm-1/);
    expect(failed.message).not.toMatch(/guest crashed/);
    expect(driver.stopped).toEqual(['vm-1']);
    expect(service.status({ migrationId }).running).toBe(false);
    expect(existsSync(join(dataDir, migrationId, 'ram.img'))).toBe(true);

    expect(await service.prepare({ migrationId, ramBytes: RAM, pageSize: 4096 })).toMatchObject({
      resumed: true,
      nextSeq: 1,
    });
    expect(plane.subjects).toContain(Subjects.data(migrationId, MemoryStreamId));
    await service.resume(request);
    // A rollback after the move: the VM is stopped and the RAM deleted.
    expect(await service.release({ migrationId, deleteRam: true })).toMatchObject({
      ramDeleted: true,
      vmStopped: true,
    });
    expect(driver.stopped).toEqual(['vm-1', 'vm-1']);
    expect(existsSync(join(dataDir, migrationId))).toBe(false);
  });

  it('rolls back a VM an earlier process started by finding it by id, or finds it gone', async () => {
    for (const gone of [undefined, new WanmigError(ErrorCode.NotFound, "no sim guest 'vm-1'")]) {
      const { migrationId, request } = await prepared();
      await service.resume(request);
      await service.beforeApplicationShutdown();
      service = await start();
      driver.gone = gone;
      expect(await service.release({ migrationId, deleteRam: true })).toMatchObject({
        ramDeleted: true,
        vmStopped: gone === undefined,
      });
      expect(existsSync(join(dataDir, migrationId))).toBe(false);
    }
    expect(driver.released).toEqual(['vm-1']);
    expect(driver.stopped).toEqual([]);
  });
});

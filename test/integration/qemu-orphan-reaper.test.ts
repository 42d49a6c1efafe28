import { randomUUID } from 'node:crypto';
import { access, readFile, truncate, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findQemuBinary, QemuDriver, type QemuIncomingVm } from '@wanmig/hypervisor';
import { callControl, controlSubject, DiskVerb, ErrorCode, ServiceName } from '@wanmig/protocol';
import { ensureGuestImage, LocalBed, Site, waitUntil, type GuestImage } from '@wanmig/testing';
import { QemuServicesClient } from '../../apps/cli/src/qemu/qemu-services.client.js';
import { QemuDestinationRecords } from '../../apps/delta-apply/src/qemu/qemu-destination.record.js';

const SETUP_TIMEOUT_MS = 15 * 60_000; // the first guest build debootstraps Debian; later runs find it cached
const TEST_TIMEOUT_MS = 40_000;
const RAM_MIB = 128;
const MiB = 2 ** 20;

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
/** A process that still runs: not gone and not a zombie (an orphan's reaping is up to whatever adopted it). */
const running = async (pid: number) => {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat !== undefined && !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
};
const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

/**
 * delta-apply killed with -9 leaves the destination QEMU it started waiting on `-incoming`; the delta-apply that
 * starts next finds it by the record in its run dir and stops it before serving (its feed died with the old one).
 */
describe('delta-apply reaps the destination QEMUs a killed predecessor left (two-site bed)', () => {
  let image: GuestImage;
  let bed: LocalBed | undefined;
  let services: QemuServicesClient;
  /** Destination QEMUs that may still run: killed as a last resort. */
  const pids = new Set<number>();
  /** The services' log lines: the reaper says what it did. */
  const lines: string[] = [];

  beforeAll(async () => {
    await findQemuBinary(); // QemuNotFoundError: install qemu-system-x86 (deploy/bootstrap.sh does)
    image = await ensureGuestImage();
    bed = await LocalBed.start({ delayMs: 5, bandwidthBps: 400e6, memory: true, log: (line) => lines.push(line) });
    services = new QemuServicesClient(bed.nc, Site.A, Site.B);
  }, SETUP_TIMEOUT_MS);

  afterAll(async () => {
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await bed?.stop();
  }, 60_000);

  it(
    'a destination started through mem.qemu.incoming: after kill -9 and restart, no QEMU and no run dir are left',
    async () => {
      const migrationId = randomUUID();
      await callControl(bed!.nc, controlSubject(Site.B, ServiceName.DeltaApply, DiskVerb.Prepare), {
        migrationId,
        sizeBytes: 64 * MiB,
      });
      const started = await services.startIncoming(migrationId, {
        ramMiB: RAM_MIB,
        kernel: image.kernel,
        initrd: image.initrd,
        accel: 'tcg',
      });
      pids.add(started.pid);
      expect(started.status).toBe('inmigrate');
      expect(await running(started.pid)).toBe(true);
      const runDir = dirname(started.monitorSocket);
      const record = JSON.parse(await readFile(join(runDir, 'destination.json'), 'utf8')) as Record<string, unknown>;
      expect(record).toMatchObject({ migrationId, pid: started.pid, resumed: false });

      await bed!.crashAndRestartDeltaApply();
      // Its incoming stream broke with the old delta-apply (QEMU then exits by itself): the reaper, which runs before
      // the new one is ready, finds it gone and removes its run dir.
      expect(await running(started.pid)).toBe(false);
      expect(await exists(runDir)).toBe(false);
      expect(lines.some((l) => l.includes(`removed the run dir of ${migrationId}`))).toBe(true);
      pids.delete(started.pid);
      // The new delta-apply knows nothing of it (once its subscriptions reach site A: UNAVAILABLE until then).
      const answer = await waitUntil(
        () =>
          services.incomingStatus(migrationId).then(
            (reply) => reply,
            (err: { code?: string }) => (err.code === ErrorCode.Unavailable ? undefined : err),
          ),
        { what: 'the restarted delta-apply to answer', timeoutMs: 10_000, intervalMs: 100 },
      );
      expect(answer).toMatchObject({ code: ErrorCode.NotFound });
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'a destination QEMU that outlived its delta-apply and was never resumed is stopped by pid and its run dir removed',
    async () => {
      // As a crash leaves it when nothing broke its incoming socket: a QEMU on -incoming in delta-apply's runtime
      // dir with its record, whose delta-apply is gone (started here as delta-apply starts it, and recorded alike).
      const migrationId = randomUUID();
      const runDir = join(bed!.dir, Site.B, 'sim', 'qemu', migrationId);
      const diskPath = join(bed!.dir, `${migrationId}.img`);
      await writeFile(diskPath, '');
      await truncate(diskPath, 64 * MiB);
      const vm: QemuIncomingVm = await new QemuDriver().startIncoming({
        name: `orphan-${migrationId.slice(0, 8)}`,
        diskPath,
        ramMiB: RAM_MIB,
        kernel: image.kernel,
        initrd: image.initrd,
        accel: 'tcg',
        runDir,
      });
      pids.add(vm.pid);
      try {
        await new QemuDestinationRecords().started(migrationId, runDir, vm.pid);
        expect(await running(vm.pid)).toBe(true);

        await bed!.crashAndRestartDeltaApply();
        expect(await running(vm.pid)).toBe(false);
        expect(await exists(runDir)).toBe(false);
        expect(lines.some((l) => l.includes(`stopped the orphan destination QEMU of ${migrationId}`))).toBe(true);
        pids.delete(vm.pid);
      } finally {
        await vm.stop();
      }
    },
    TEST_TIMEOUT_MS,
  );
});

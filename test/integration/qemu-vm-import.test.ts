/**
 * A QEMU the user started (bootGuest, as someone would by hand) taken over with `vm.import` by a plain NATS client,
 * then moved to B through the orchestrators as any VM: COMMITTED, verified, its counter carried on. And what import
 * refuses, each refusal leaving nothing behind: a socket path that does not exist, a socket that is not QEMU's, a
 * disk node QEMU does not have, addresses, an id (or a QEMU) already taken.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import type { NatsConnection } from '@nats-io/nats-core';
import {
  bootGuest,
  ensureGuestImage,
  GUEST_DISK_NODE,
  LocalBed,
  queryGuestCounter,
  Site,
  trackDir,
  untrackDir,
  waitUntil,
  type GuestHandle,
} from '@wanmig/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.runner.js';
import {
  apiCall,
  apiOk,
  isFinished,
  waitMigration,
  type MigrationLike,
  portOf,
  QEMU_TCG_ENV,
  type VmLike,
} from '../support/external.client.js';

const MIB = 1024 * 1024;
const RAM_MIB = 256;
const SETUP_TIMEOUT_MS = 15 * 60_000; // the first guest build debootstraps Debian; later runs find it cached
const MOVE_TIMEOUT_MS = 240_000;
const TCG = QEMU_TCG_ENV;

describe('vm.import: a running QEMU taken over and moved (two sites, real services, real QEMU)', () => {
  let bed: LocalBed;
  let nc: NatsConnection;
  let dir: string;
  let guest: GuestHandle;
  let notQemu: Server | undefined;

  const importVm = (body: Record<string, unknown>) => apiCall<VmLike>(nc, Site.A, 'vm.import', body, 60_000);
  /** Nothing recorded under `vmId`: no inventory entry, no QEMU VM dir at the site. */
  async function expectNothingRecorded(vmId: string): Promise<void> {
    expect(await apiCall(nc, Site.A, 'vm.get', { vmId })).toMatchObject({ ok: false, code: 'NOT_FOUND' });
    const registered = await readdir(join(bed.runtimeDirA, 'qemu-vms')).catch(() => [] as string[]);
    expect(registered).not.toContain(vmId);
  }

  beforeAll(async () => {
    const image = await ensureGuestImage();
    bed = await LocalBed.start({
      delayMs: 10,
      bandwidthBps: 200e6,
      orchestrator: true,
      orchestratorEnv: { [Site.A]: TCG, [Site.B]: TCG },
    });
    nc = await connect({ servers: bed.sites.a.url });
    dir = await mkdtemp(join(tmpdir(), 'wanmig-import-'));
    trackDir(dir);
    await mkdir(join(dir, 'guest'));
    guest = await bootGuest({
      disk: image.disk,
      diskMode: 'copy',
      workDir: join(dir, 'guest'),
      qmpSocket: join(dir, 'qmp.sock'),
      ramMiB: RAM_MIB,
      accel: 'tcg',
    });
  }, SETUP_TIMEOUT_MS);

  afterAll(async () => {
    await nc?.close();
    await guest?.stop();
    await new Promise<void>((resolve) => (notQemu ? notQemu.close(() => resolve()) : resolve()));
    await bed?.stop();
    if (dir) {
      await rm(dir, { recursive: true, force: true });
      untrackDir(dir);
    }
  }, 60_000);

  it('refuses what it cannot take over, records nothing and leaves the QEMU running', async () => {
    const qmpSocket = guest.qmpSocket!;
    const missing = await importVm({ vmId: 'ghost', qmpSocket: join(dir, 'no-such.sock'), diskNode: 'disk0' });
    expect(missing).toMatchObject({ ok: false, code: 'NOT_FOUND' });
    await expectNothingRecorded('ghost');

    // A unix socket that answers, but not as QEMU's QMP.
    const liar = join(dir, 'not-qemu.sock');
    notQemu = createServer((peer) => peer.end('220 this is no QEMU\r\n'));
    await new Promise<void>((resolve) => notQemu!.listen(liar, resolve));
    const impostor = await importVm({ vmId: 'impostor', qmpSocket: liar, diskNode: 'disk0' });
    expect(impostor).toMatchObject({ ok: false, code: 'UNAVAILABLE' });
    await expectNothingRecorded('impostor');

    const noNode = await importVm({ vmId: 'no-node', qmpSocket, diskNode: 'disk9' });
    expect(noNode).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(noNode.ok === false && noNode.message).toMatch(/no block node disk9 .*cannot be mirrored/);
    await expectNothingRecorded('no-node');

    const withAddress = await importVm({ vmId: 'addressed', qmpSocket, diskNode: 'disk0', addresses: ['10.9.0.5'] });
    expect(withAddress).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    await expectNothingRecorded('addressed');

    // Through the CLI too: one line on stderr with the API's code, exit 1.
    const cli = await runCli([
      'vm',
      'adopt',
      'ghost',
      '--qmp',
      join(dir, 'no-such.sock'),
      '--disk',
      'disk0',
      '--nats',
      bed.sites.a.url,
    ]);
    expect(cli.code, cli.stderr).toBe(1);
    expect(cli.stderr).toMatch(/^wanmig: .*does not exist \(NOT_FOUND\)\n$/);

    expect(guest.running).toBe(true);
    expect(await queryGuestCounter(guest.servicePort)).toBeGreaterThan(0);
  });

  it(
    'imports it as it runs, refuses its id and its QEMU a second time, then moves it to B: COMMITTED, verified, counter carried on',
    async () => {
      const imported = await apiOk<VmLike>(
        nc,
        Site.A,
        'vm.import',
        { vmId: 'adopted', qmpSocket: guest.qmpSocket, diskNode: GUEST_DISK_NODE },
        60_000,
      );
      expect(imported).toMatchObject({
        vmId: 'adopted',
        site: Site.A,
        driver: 'qemu',
        state: 'running',
        serviceAddress: `127.0.0.1:${guest.servicePort}`,
        ramBytes: RAM_MIB * MIB,
        diskPath: guest.disk,
      });
      const before = await queryGuestCounter(guest.servicePort);

      const sameId = await importVm({ vmId: 'adopted', qmpSocket: guest.qmpSocket, diskNode: GUEST_DISK_NODE });
      expect(sameId).toMatchObject({ ok: false, code: 'CONFLICT' });
      const sameQemu = await importVm({ vmId: 'twice', qmpSocket: guest.qmpSocket, diskNode: GUEST_DISK_NODE });
      expect(sameQemu).toMatchObject({ ok: false, code: 'CONFLICT' });
      await expectNothingRecorded('twice');
      expect(await apiOk<VmLike>(nc, Site.A, 'vm.get', { vmId: 'adopted' })).toEqual(imported);

      const listed = await runCli(['vm', 'list', '--nats', bed.sites.a.url]);
      expect(listed.code, listed.stderr).toBe(0);
      expect(listed.stdout).toMatch(/^VM\s+SITE\s+DRIVER\s+STATE/);
      expect(listed.stdout).toMatch(/\nadopted\s+site-a\s+qemu\s+running\s/);

      const created = await apiOk<MigrationLike>(nc, Site.A, 'migration.create', {
        vmId: 'adopted',
        toSite: Site.B,
        verify: true,
      });
      const done = await waitMigration(nc, Site.A, created.id, isFinished, MOVE_TIMEOUT_MS);
      expect(done.phase, JSON.stringify(done.error)).toBe('COMMITTED');
      expect(done.history.map((h) => h.phase)).not.toContain('ROLLING_BACK');
      const figures = done.figures as Record<string, unknown>;
      console.info(`[qemu-vm-import] A→B: ${JSON.stringify(figures)}`);
      expect(figures.diskVerified, 'disk verified at pause').toBe(true);
      expect(figures.ramVerified, 'stream digests matched before the resume').toBe(true);

      const moved = await apiOk<VmLike>(nc, Site.B, 'vm.get', { vmId: 'adopted' });
      expect(moved).toMatchObject({ site: Site.B, driver: 'qemu', state: 'running', ramBytes: RAM_MIB * MIB });
      expect(await queryGuestCounter(portOf(moved.serviceAddress)), 'the guest counts on at B').toBeGreaterThan(before);
      expect(await apiCall(nc, Site.A, 'vm.get', { vmId: 'adopted' })).toMatchObject({ ok: false, code: 'NOT_FOUND' });
      // A released it: its QEMU stopped; the image was the user's, so it stays.
      await waitUntil(() => !guest.running, { what: "the user's QEMU to stop at A", timeoutMs: 15_000 });
      expect(existsSync(guest.disk), "the user's image is kept").toBe(true);

      await apiOk(nc, Site.B, 'vm.rm', { vmId: 'adopted' }, 30_000);
    },
    MOVE_TIMEOUT_MS + 120_000,
  );
});

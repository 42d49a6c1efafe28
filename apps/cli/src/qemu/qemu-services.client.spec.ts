import type { NatsConnection } from '@nats-io/nats-core';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '@wanmig/protocol';
import { QemuServicesClient } from './qemu-services.client.js';

interface Call {
  subject: string;
  data: unknown;
  timeout: number;
}

/** Answers every request with `reply` (or the error) and records subject, body and timeout. */
function fakeNats(reply: object = { response: { ok: true } }) {
  const calls: Call[] = [];
  const nc = {
    request: (subject: string, payload: string, options: { timeout: number }) => {
      calls.push({ subject, data: (JSON.parse(payload) as { data: unknown }).data, timeout: options.timeout });
      return Promise.resolve({ string: () => JSON.stringify(reply) });
    },
  } as unknown as NatsConnection;
  return { nc, calls };
}

const ID = '0b6f1c1e-4d2a-4c55-9a7e-2f0d8e1b3c4a';

describe('QemuServicesClient', () => {
  it('sends each verb to the service that owns it, at its site', async () => {
    const { nc, calls } = fakeNats();
    const client = new QemuServicesClient(nc, 'site-a', 'site-b');
    await client.startIncoming(ID, { ramMiB: 256, kernel: '/k', initrd: '/i', accel: 'tcg' });
    await client.openRelay(ID, { bandwidthBps: 160e6 + 0.4, windowBytes: 3e6 });
    await client.relayStatus(ID);
    await client.incomingStatus(ID);
    await client.resume(ID, { loadTimeoutMs: 5_000, announceRounds: 2 });
    await client.closeRelay(ID);
    await client.abortIncoming(ID);
    await client.openRelay(ID);
    // Post-copy: the destination with `postcopy`, the relay with its return path; false is the default, not sent.
    await client.startIncoming(ID, { ramMiB: 256, kernel: '/k', initrd: '/i', postcopy: true });
    await client.openRelay(ID, { returnPath: true });
    await client.startIncoming(ID, { ramMiB: 256, kernel: '/k', initrd: '/i', postcopy: false });
    await client.openRelay(ID, { returnPath: false });
    expect(calls.map(({ subject, data }) => [subject, data])).toEqual([
      [
        'wanmig.v1.site-b.delta-apply.mem.qemu.incoming',
        { migrationId: ID, ramMiB: 256, kernel: '/k', initrd: '/i', accel: 'tcg' },
      ],
      ['wanmig.v1.site-a.memory-precopy.mem.qemu.relay', { migrationId: ID, windowBytes: 3e6, bandwidthBps: 160e6 }],
      ['wanmig.v1.site-a.memory-precopy.mem.qemu.relay.status', { migrationId: ID }],
      ['wanmig.v1.site-b.delta-apply.mem.qemu.incoming.status', { migrationId: ID }],
      ['wanmig.v1.site-b.delta-apply.mem.qemu.resume', { migrationId: ID, loadTimeoutMs: 5_000, announceRounds: 2 }],
      ['wanmig.v1.site-a.memory-precopy.mem.qemu.relay.close', { migrationId: ID }],
      ['wanmig.v1.site-b.delta-apply.mem.qemu.incoming.abort', { migrationId: ID, stopRunning: false }],
      ['wanmig.v1.site-a.memory-precopy.mem.qemu.relay', { migrationId: ID }],
      [
        'wanmig.v1.site-b.delta-apply.mem.qemu.incoming',
        { migrationId: ID, ramMiB: 256, kernel: '/k', initrd: '/i', postcopy: true },
      ],
      ['wanmig.v1.site-a.memory-precopy.mem.qemu.relay', { migrationId: ID, returnPath: true }],
      ['wanmig.v1.site-b.delta-apply.mem.qemu.incoming', { migrationId: ID, ramMiB: 256, kernel: '/k', initrd: '/i' }],
      ['wanmig.v1.site-a.memory-precopy.mem.qemu.relay', { migrationId: ID }],
    ]);
    // The resume may wait for the load: its request outlives it.
    expect(calls[4].timeout).toBeGreaterThan(5_000);
  });

  it('rejects with the service’s typed error', async () => {
    const { nc } = fakeNats({ err: { code: 'NOT_FOUND', message: `no destination QEMU of migration ${ID}` } });
    const client = new QemuServicesClient(nc, 'site-a', 'site-b');
    await expect(client.incomingStatus(ID)).rejects.toMatchObject({
      code: ErrorCode.NotFound,
      subject: 'wanmig.v1.site-b.delta-apply.mem.qemu.incoming.status',
    });
  });
});

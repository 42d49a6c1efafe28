import { stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bootGuest,
  ensureGuestImage,
  queryGuestCounter,
  readGuestDiskCounter,
  sha256File,
  sleep,
  waitUntil,
  type GuestHandle,
  type GuestImage,
} from '@wanmig/testing';

// The first build debootstraps Debian (about half a minute with a near mirror; allow for a slow one).
const BUILD_TIMEOUT_MS = 15 * 60_000;
const BOOT_TIMEOUT_MS = 120_000;

describe('QEMU guest under TCG: boots, serves its counter, writes its disk', () => {
  let image: GuestImage;
  let guest: GuestHandle | undefined;
  let pristineMtimeMs: number;

  beforeAll(async () => {
    const built = Date.now();
    image = await ensureGuestImage();
    console.log(`guest image ready in ${Date.now() - built} ms (${image.cacheDir}, kernel ${image.kernelVersion})`);
    pristineMtimeMs = (await stat(image.disk)).mtimeMs;
    guest = await bootGuest({ disk: image.disk, accel: 'tcg', ramMiB: 256, readyTimeoutMs: BOOT_TIMEOUT_MS });
    console.log(`guest pid ${guest.pid} ready after ${guest.readyAfterMs} ms, service on port ${guest.servicePort}`);
  }, BUILD_TIMEOUT_MS + BOOT_TIMEOUT_MS);

  afterAll(async () => {
    await guest?.stop();
  }, 30_000);

  it('answers on the forwarded port with a counter that keeps increasing', async () => {
    const seen: number[] = [];
    const latencies: number[] = [];
    for (let i = 0; i < 5; i++) {
      const asked = Date.now();
      seen.push(await queryGuestCounter(guest!.servicePort));
      latencies.push(Date.now() - asked);
      await sleep(300);
    }
    console.log(`counter ${seen.join(' ')}; reply latency ${latencies.join(' ')} ms`);
    // The latencies are printed, not asserted: a connection costs the guest a fork and exec of busybox under TCG,
    // milliseconds on an idle machine, and a loaded one is no place for a time limit.
    for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]);
  });

  it('writes its disk: the counter on the image advances and the image changes', async () => {
    const disk = guest!.disk;
    const before = { counter: await readGuestDiskCounter(disk), sha: await sha256File(disk) };
    const after = await waitUntil(
      async () => {
        const counter = await readGuestDiskCounter(disk);
        return counter > before.counter ? counter : undefined;
      },
      { what: 'the guest to fsync a newer counter to its disk', timeoutMs: 15_000, intervalMs: 500 },
    );
    console.log(`counter on the disk image: ${before.counter} -> ${after}`);
    expect(await sha256File(disk)).not.toBe(before.sha);
    // The in-memory counter is at least as far as the one on the disk.
    expect(await queryGuestCounter(guest!.servicePort)).toBeGreaterThanOrEqual(after);
  });

  it('leaves the cached image untouched (the guest runs on a copy)', async () => {
    expect(guest!.disk).not.toBe(image.disk);
    expect((await stat(image.disk)).mtimeMs).toBe(pristineMtimeMs);
  });

  it('stops: the QEMU process is gone and its work dir removed', async () => {
    const running = guest!;
    await running.stop();
    expect(running.running).toBe(false);
    expect(() => process.kill(running.pid, 0)).toThrow();
    await expect(stat(running.workDir)).rejects.toThrow();
  });
});

import { describe, expect, it } from 'vitest';
import { DEFAULT_GUEST_CACHE_DIR, guestCacheDir, guestImageAt, testGuestAppend } from './test-guest.image.js';

describe('the test guest image', () => {
  it('boots quiet, with its workload knobs only when given', () => {
    expect(testGuestAppend()).toBe('console=ttyS0 quiet panic=-1');
    expect(testGuestAppend({ hotMiB: 0, diskKiB: 64 })).toBe(
      'console=ttyS0 quiet panic=-1 wanmig.hot_mib=0 wanmig.disk_kib=64',
    );
  });

  it('lives in WANMIG_GUEST_CACHE, else the default cache dir', () => {
    expect(guestCacheDir({})).toBe(DEFAULT_GUEST_CACHE_DIR);
    expect(guestCacheDir({ WANMIG_GUEST_CACHE: '/srv/guest/' })).toBe('/srv/guest');
    expect(guestImageAt('/srv/guest')).toMatchObject({
      kernel: '/srv/guest/vmlinuz',
      initrd: '/srv/guest/initramfs.cpio.gz',
      disk: '/srv/guest/disk.img',
      cacheDir: '/srv/guest',
    });
  });
});

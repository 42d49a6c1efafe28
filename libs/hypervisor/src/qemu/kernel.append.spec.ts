import { describe, expect, it } from 'vitest';
import { DEFAULT_QEMU_APPEND, kernelAppend } from './kernel.append.js';

describe('kernelAppend', () => {
  it('gives the console and panic=-1 by default', () => {
    expect(DEFAULT_QEMU_APPEND).toBe('console=ttyS0 panic=-1');
  });

  it('puts quiet between them and the workload words after, 0 included', () => {
    expect(kernelAppend({ quiet: true })).toBe('console=ttyS0 quiet panic=-1');
    expect(kernelAppend({ quiet: true, hotMiB: 0, diskKiB: 64 })).toBe(
      'console=ttyS0 quiet panic=-1 wanmig.hot_mib=0 wanmig.disk_kib=64',
    );
  });

  it('ends with the extra words as they are', () => {
    expect(kernelAppend({ diskKiB: 8, extra: ['wanmig.ip=10.0.0.5/24', 'wanmig.gw=10.0.0.1'] })).toBe(
      'console=ttyS0 panic=-1 wanmig.disk_kib=8 wanmig.ip=10.0.0.5/24 wanmig.gw=10.0.0.1',
    );
  });
});

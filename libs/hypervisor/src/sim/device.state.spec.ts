import { describe, expect, it } from 'vitest';
import { DeviceStateError } from '../errors.js';
import {
  DEVICE_STATE_BYTES,
  decodeDeviceState,
  encodeDeviceState,
  sha256Hex,
  type SimDeviceState,
} from './device.state.js';

const RAM = 64 * 2 ** 20;
const sample: SimDeviceState = {
  workload: 'db',
  throttlePercent: 40,
  seed: 0xdeadbeef,
  ramBytes: RAM,
  pageSize: 4096,
  cursor: {
    ticks: 123_456_789_012,
    ramRng: [1, 2, 3, 0xffffffff],
    kvRng: [5, 6, 7, 8],
    diskRng: [9, 10, 11, 12],
    ramTokens: -4095.5,
    kvTokens: 0.25,
    diskTokens: 65536,
    pageWrites: 2 ** 40,
    kvUpdates: 77,
    diskWrites: 5,
  },
};

function problemOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DeviceStateError);
    expect((err as DeviceStateError).code).toBe('INVALID_REQUEST');
    return (err as DeviceStateError).problem;
  }
  return undefined;
}

describe('sim device state', () => {
  it('round-trips every field in a fixed-size blob with its sha256', () => {
    const state = encodeDeviceState(sample);
    expect(state.blob.length).toBe(DEVICE_STATE_BYTES);
    expect(state.sha256).toBe(sha256Hex(state.blob));
    expect(decodeDeviceState(state, { ramBytes: RAM })).toEqual(sample);
  });

  it('refuses a blob of the wrong size before anything else', () => {
    const { blob, sha256 } = encodeDeviceState(sample);
    expect(problemOf(() => decodeDeviceState({ blob: blob.subarray(0, 100), sha256 }, { ramBytes: RAM }))).toBe('size');
    const longer = Buffer.concat([blob, Buffer.alloc(1)]);
    expect(problemOf(() => decodeDeviceState({ blob: longer, sha256: sha256Hex(longer) }, { ramBytes: RAM }))).toBe(
      'size',
    );
  });

  it('refuses a flipped bit anywhere (checksum)', () => {
    const { blob, sha256 } = encodeDeviceState(sample);
    for (const at of [0, 11, 100, 255]) {
      const bad = Buffer.from(blob);
      bad[at] ^= 0x10;
      expect(problemOf(() => decodeDeviceState({ blob: bad, sha256 }, { ramBytes: RAM }))).toBe('checksum');
    }
  });

  it('refuses a well-checksummed blob that is not a sim state (format)', () => {
    const bad = Buffer.from(encodeDeviceState(sample).blob);
    bad.write('XXXX', 0, 'latin1');
    expect(problemOf(() => decodeDeviceState({ blob: bad, sha256: sha256Hex(bad) }, { ramBytes: RAM }))).toBe('format');
    const badWorkload = Buffer.from(encodeDeviceState(sample).blob);
    badWorkload[10] = 9;
    expect(
      problemOf(() => decodeDeviceState({ blob: badWorkload, sha256: sha256Hex(badWorkload) }, { ramBytes: RAM })),
    ).toBe('format');
  });

  it('refuses the state of a guest with another RAM size (mismatch)', () => {
    expect(problemOf(() => decodeDeviceState(encodeDeviceState(sample), { ramBytes: 2 * RAM }))).toBe('mismatch');
  });
});

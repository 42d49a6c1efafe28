import { createHash } from 'node:crypto';
import { DeviceStateError, DeviceStateProblem } from '../errors.js';
import { type DeviceState } from '../hypervisor.driver.js';
import { SIM_PAGE_SIZE, SIM_WORKLOADS, type SimWorkload } from './sim.constants.js';
import { type RngState } from './snapshot.rng.js';
import { type WorkloadCursor } from './workload.cursor.js';

/**
 * The sim guest's CPU and device state: everything but RAM and disk that it needs to go on. It
 * holds no counter (that lives in RAM, page 0) and no wall-clock time. Fixed size, little-endian:
 *
 *    0  8  magic 'WMSIMDEV'        40 16 RAM-write RNG (4 × u32)
 *    8  u16 version (1)            56 16 key-value RNG
 *   10  u8  workload               72 16 disk-write RNG
 *   11  u8  throttle percent       88 f64 RAM tokens
 *   12  u32 seed                   96 f64 key-value tokens
 *   16  u64 RAM bytes             104 f64 disk tokens
 *   24  u32 page size             112 u64 page writes
 *   28  u32 reserved (0)          120 u64 key-value updates
 *   32  u64 ticks                 128 u64 disk writes
 *                                 136..255 reserved (0)
 *
 * The sha256 travels beside the blob (DeviceState.sha256) and is checked before anything is read.
 */
export const DEVICE_STATE_BYTES = 256;
export const DEVICE_STATE_MAGIC = Buffer.from('WMSIMDEV', 'latin1');
export const DEVICE_STATE_VERSION = 1;

export interface SimDeviceState {
  workload: SimWorkload;
  throttlePercent: number;
  seed: number;
  ramBytes: number;
  pageSize: number;
  cursor: WorkloadCursor;
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export function encodeDeviceState(state: SimDeviceState): DeviceState {
  const b = Buffer.alloc(DEVICE_STATE_BYTES);
  DEVICE_STATE_MAGIC.copy(b, 0);
  b.writeUInt16LE(DEVICE_STATE_VERSION, 8);
  b.writeUInt8(SIM_WORKLOADS.indexOf(state.workload), 10);
  b.writeUInt8(state.throttlePercent, 11);
  b.writeUInt32LE(state.seed >>> 0, 12);
  b.writeBigUInt64LE(BigInt(state.ramBytes), 16);
  b.writeUInt32LE(state.pageSize, 24);
  const c = state.cursor;
  b.writeBigUInt64LE(BigInt(c.ticks), 32);
  writeRng(b, 40, c.ramRng);
  writeRng(b, 56, c.kvRng);
  writeRng(b, 72, c.diskRng);
  b.writeDoubleLE(c.ramTokens, 88);
  b.writeDoubleLE(c.kvTokens, 96);
  b.writeDoubleLE(c.diskTokens, 104);
  b.writeBigUInt64LE(BigInt(c.pageWrites), 112);
  b.writeBigUInt64LE(BigInt(c.kvUpdates), 120);
  b.writeBigUInt64LE(BigInt(c.diskWrites), 128);
  return { blob: b, sha256: sha256Hex(b) };
}

/**
 * Checks and reads a device state: size first, then the sha256, then the format, then that it
 * belongs to a guest of `expected.ramBytes`. Each failure is a DeviceStateError naming the problem.
 */
export function decodeDeviceState(state: DeviceState, expected: { ramBytes: number; vmId?: string }): SimDeviceState {
  const { blob } = state;
  const vmId = expected.vmId;
  if (blob.length !== DEVICE_STATE_BYTES) {
    throw new DeviceStateError(
      DeviceStateProblem.Size,
      `${blob.length} bytes, a sim device state has ${DEVICE_STATE_BYTES}`,
      { vmId },
    );
  }
  const actual = sha256Hex(blob);
  if (actual !== state.sha256.toLowerCase()) {
    throw new DeviceStateError(DeviceStateProblem.Checksum, `sha256 is ${actual}, expected ${state.sha256}`, { vmId });
  }
  const format = (why: string) => new DeviceStateError(DeviceStateProblem.Format, why, { vmId });
  if (!blob.subarray(0, 8).equals(DEVICE_STATE_MAGIC)) throw format('not a sim device state');
  const version = blob.readUInt16LE(8);
  if (version !== DEVICE_STATE_VERSION) throw format(`version ${version} is not supported`);
  const workload = SIM_WORKLOADS[blob.readUInt8(10)];
  if (workload === undefined) throw format(`unknown workload code ${blob.readUInt8(10)}`);
  const throttlePercent = blob.readUInt8(11);
  if (throttlePercent > 99) throw format(`throttle ${throttlePercent} % is out of range`);
  const pageSize = blob.readUInt32LE(24);
  if (pageSize !== SIM_PAGE_SIZE) throw format(`page size ${pageSize} is not ${SIM_PAGE_SIZE}`);
  const tokens = [88, 96, 104].map((at) => blob.readDoubleLE(at));
  if (!tokens.every(Number.isFinite)) throw format('token bucket levels are not finite');
  const ramBytes = readU64(blob, 16);
  if (ramBytes !== expected.ramBytes) {
    throw new DeviceStateError(
      DeviceStateProblem.Mismatch,
      `the state is of a guest with ${ramBytes} bytes of RAM, this one has ${expected.ramBytes}`,
      { vmId },
    );
  }
  return {
    workload,
    throttlePercent,
    seed: blob.readUInt32LE(12),
    ramBytes,
    pageSize,
    cursor: {
      ticks: readU64(blob, 32),
      ramRng: readRng(blob, 40),
      kvRng: readRng(blob, 56),
      diskRng: readRng(blob, 72),
      ramTokens: tokens[0],
      kvTokens: tokens[1],
      diskTokens: tokens[2],
      pageWrites: readU64(blob, 112),
      kvUpdates: readU64(blob, 120),
      diskWrites: readU64(blob, 128),
    },
  };
}

function writeRng(b: Buffer, at: number, state: RngState): void {
  state.forEach((word, i) => b.writeUInt32LE(word >>> 0, at + i * 4));
}

function readRng(b: Buffer, at: number): RngState {
  return [b.readUInt32LE(at), b.readUInt32LE(at + 4), b.readUInt32LE(at + 8), b.readUInt32LE(at + 12)];
}

function readU64(b: Buffer, at: number): number {
  return Number(b.readBigUInt64LE(at));
}

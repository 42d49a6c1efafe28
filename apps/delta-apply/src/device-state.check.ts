import type { ResumeVmRequest } from '@wanmig/protocol';
import type { HeldDeviceState } from './device-state.sink.js';
import { DeviceStateMismatchError } from './errors.js';

/**
 * The device state a resume may use: the one held durably here, when its size and sha256 are the
 * ones the source announced. Anything else is INVALID_REQUEST naming what differs, and nothing is
 * started: a VM resumed on another state than its RAM's would run corrupt.
 */
export function checkDeviceState(
  held: HeldDeviceState | undefined,
  request: Pick<ResumeVmRequest, 'migrationId' | 'deviceStateBytes' | 'deviceStateSha256'>,
): HeldDeviceState {
  const { migrationId, deviceStateBytes, deviceStateSha256 } = request;
  if (!held || held.blob.length === 0) {
    throw new DeviceStateMismatchError({
      migrationId,
      mismatch: 'missing',
      message: `no device state received for migration ${migrationId} (expected ${deviceStateBytes} bytes)`,
    });
  }
  if (held.blob.length !== deviceStateBytes) {
    throw new DeviceStateMismatchError({
      migrationId,
      mismatch: 'size',
      message: `device state of migration ${migrationId} is ${held.blob.length} bytes, not deviceStateBytes ${deviceStateBytes}`,
    });
  }
  if (held.sha256 !== deviceStateSha256) {
    throw new DeviceStateMismatchError({
      migrationId,
      mismatch: 'sha256',
      message: `device state of migration ${migrationId} has sha256 ${held.sha256}, not deviceStateSha256 ${deviceStateSha256}`,
    });
  }
  return held;
}

import { describe, expect, it } from 'vitest';
import {
  ControlProtocolError,
  DeviceStateError,
  GuestConfigError,
  GuestRequestError,
  GuestStateError,
} from '../errors.js';
import {
  decodeControlError,
  encodeControlError,
  parseControlRequest,
  parseControlResponse,
} from './control.protocol.js';

const req = (o: unknown) => JSON.stringify(o);

describe('control protocol', () => {
  it('parses requests, args defaulting to {}', () => {
    expect(parseControlRequest(req({ id: 1, op: 'pause' }))).toEqual({ id: 1, op: 'pause', args: {} });
    expect(parseControlRequest(req({ id: 2, op: 'throttle', args: { percent: 90 } })).args).toEqual({ percent: 90 });
  });

  it.each([
    ['not json', 'nope'],
    ['an array', '[]'],
    ['no id', req({ op: 'pause' })],
    ['unknown op', req({ id: 1, op: 'reboot' })],
    ['args not an object', req({ id: 1, op: 'pause', args: [1] })],
    ['throttle above 99', req({ id: 1, op: 'throttle', args: { percent: 100 } })],
    ['throttle not integer', req({ id: 1, op: 'throttle', args: { percent: 12.5 } })],
    ['blob not base64', req({ id: 1, op: 'resumeIncoming', args: { blob: '$$', sha256: 'a'.repeat(64) } })],
    ['short sha256', req({ id: 1, op: 'resumeIncoming', args: { blob: 'AAAA', sha256: 'abc' } })],
    ['monitor without command', req({ id: 1, op: 'monitor', args: {} })],
  ])('refuses %s', (_what, line) => {
    expect(() => parseControlRequest(line)).toThrow(ControlProtocolError);
  });

  it('carries typed errors across and rebuilds them on the driver side', () => {
    const dse = new DeviceStateError('checksum', 'sha256 is x, expected y', { vmId: 'vm1' });
    const back = decodeControlError('vm1', 'resumeIncoming', encodeControlError(dse));
    expect(back).toBeInstanceOf(DeviceStateError);
    expect((back as DeviceStateError).problem).toBe('checksum');
    expect((back as DeviceStateError).code).toBe('INVALID_REQUEST');
    expect(back.message).toBe(dse.message);

    const gse = decodeControlError(
      'vm1',
      'deviceState',
      encodeControlError(new GuestStateError('vm1', 'deviceState', 'running')),
    );
    expect(gse).toBeInstanceOf(GuestStateError);
    expect((gse as GuestStateError).state).toBe('running');

    const other = decodeControlError('vm1', 'describe', encodeControlError(new GuestConfigError(['bad'])));
    expect(other).toBeInstanceOf(GuestRequestError);
    expect((other as GuestRequestError).code).toBe('INVALID_REQUEST');
  });

  it('hides unknown errors as INTERNAL', () => {
    expect(encodeControlError(new Error('secret path /x'))).toEqual({
      code: 'INTERNAL',
      name: 'Error',
      message: 'internal error (see the guest log)',
    });
  });

  it('parses responses and refuses malformed ones', () => {
    expect(parseControlResponse(req({ id: 3, ok: true, result: { a: 1 } }))).toEqual({
      id: 3,
      ok: true,
      result: { a: 1 },
    });
    const err = parseControlResponse(req({ id: 4, ok: false, error: { code: 'WAT', name: 'X', message: 'm' } }));
    expect(err).toMatchObject({ ok: false, error: { code: 'INTERNAL', message: 'm' } });
    expect(() => parseControlResponse(req({ id: 'x', ok: true }))).toThrow(ControlProtocolError);
  });
});

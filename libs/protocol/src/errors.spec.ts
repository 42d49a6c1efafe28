import { describe, expect, it } from 'vitest';
import { decodeRpcReply } from './control/rpc.envelope.js';
import { ErrorCode } from './error-codes.js';
import { isRetryable, toWireError, WanmigError } from './errors.js';

describe('whether a retry may help', () => {
  it('follows the code unless the thrower says otherwise', () => {
    expect(new WanmigError(ErrorCode.Unavailable, 'away').retryable).toBe(true);
    expect(new WanmigError(ErrorCode.StreamTimeout, 'slow').retryable).toBe(true);
    expect(new WanmigError(ErrorCode.Conflict, 'busy').retryable).toBe(false);
    expect(new WanmigError(ErrorCode.DigestMismatch, 'differs').retryable).toBe(false);
    expect(new WanmigError(ErrorCode.Unavailable, 'the engine gave up', { retryable: false }).retryable).toBe(false);
  });

  it('crosses the wire and comes back as it was said', () => {
    const final = toWireError(new WanmigError(ErrorCode.Unavailable, 'gave up', { retryable: false }));
    expect(final).toEqual({ code: 'UNAVAILABLE', message: 'gave up', retryable: false });
    const reply = (err: object) => JSON.stringify({ err, id: '1' });
    expect(() => decodeRpcReply(reply(final), 's')).toThrow(expect.objectContaining({ retryable: false }));
    // An older service's reply has no flag: the code decides.
    const old = { code: 'UNAVAILABLE', message: 'away' };
    expect(() => decodeRpcReply(reply(old), 's')).toThrow(expect.objectContaining({ retryable: true }));
    expect(isRetryable(old)).toBe(true);
    expect(isRetryable({ code: 'NOT_FOUND', message: 'gone' })).toBe(false);
  });

  it('never for an unexpected error, whose detail stays in the log', () => {
    expect(toWireError(new Error('disk on fire'))).toEqual({
      code: 'INTERNAL',
      message: 'internal error (see the service log)',
      retryable: false,
    });
    expect(isRetryable(new Error('x'))).toBe(false);
  });
});

import { describe, expect, it } from 'vitest';
import { NatsServerNotFoundError } from './errors.js';
import { resolveNatsServerBinary } from './nats-binary.resolver.js';

describe('resolveNatsServerBinary', () => {
  it('fails fast with a typed error that says how to install nats-server', () => {
    const attempt = () => resolveNatsServerBinary('/nonexistent/bin/nats-server');
    expect(attempt).toThrow(NatsServerNotFoundError);
    expect(attempt).toThrow(/bash deploy\/bootstrap\.sh/);
    expect(attempt).toThrow(/apt-get install nats-server/);
  });

  it('looks names up on PATH and honours NATS_SERVER_BIN', () => {
    expect(() => resolveNatsServerBinary(undefined, { PATH: '/nonexistent' })).toThrow(NatsServerNotFoundError);
    expect(resolveNatsServerBinary(undefined, { PATH: '/nonexistent', NATS_SERVER_BIN: process.execPath })).toBe(
      process.execPath,
    );
    expect(resolveNatsServerBinary('node', { PATH: `/nonexistent:${process.execPath.replace(/\/node$/, '')}` })).toBe(
      process.execPath,
    );
  });

  it('carries the binary and the cause on the error', () => {
    const cause = new Error('ENOENT');
    const error = new NatsServerNotFoundError('x', { cause });
    expect(error.name).toBe('NatsServerNotFoundError');
    expect(error.binary).toBe('x');
    expect(error.cause).toBe(cause);
  });
});

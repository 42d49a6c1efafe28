import type { Frame } from '@wanmig/protocol';
import type { FrameSink } from '@wanmig/stream';
import { describe, expect, it } from 'vitest';
import { ClosableSink } from './closable.sink.js';
import { SessionClosedError } from './errors.js';

describe('ClosableSink', () => {
  it('waits for the apply under way on close, then refuses everything without touching the sink', async () => {
    const calls: string[] = [];
    let finish!: () => void;
    const inner: FrameSink = {
      apply: () => {
        calls.push('apply');
        return new Promise<void>((resolve) => (finish = resolve));
      },
      sync: () => {
        calls.push('sync');
        return Promise.resolve();
      },
    };
    const sink = new ClosableSink(inner, 'm');
    const applying = sink.apply({} as Frame);
    let closed = false;
    const closing = sink.close().then(() => (closed = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(closed).toBe(false);
    finish();
    await applying;
    await closing;
    await expect(sink.apply({} as Frame)).rejects.toBeInstanceOf(SessionClosedError);
    await expect(sink.sync()).rejects.toBeInstanceOf(SessionClosedError);
    expect(calls).toEqual(['apply']);
  });
});

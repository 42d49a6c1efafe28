import { describe, expect, it } from 'vitest';
import { KeyedLock } from './keyed.lock.js';

describe('KeyedLock', () => {
  it('runs work on one key one at a time, in order, even after a failure', async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    const step =
      (name: string, fail = false) =>
      async () => {
        log.push(`${name}:start`);
        await new Promise((resolve) => setTimeout(resolve, 5));
        log.push(`${name}:end`);
        if (fail) throw new Error(name);
        return name;
      };
    const a = lock.run('m', step('a', true));
    const b = lock.run('m', step('b'));
    await expect(a).rejects.toThrow('a');
    expect(await b).toBe('b');
    expect(log).toEqual(['a:start', 'a:end', 'b:start', 'b:end']);
    expect(lock.size).toBe(0);
  });

  it('lets different keys run side by side', async () => {
    const lock = new KeyedLock();
    const log: string[] = [];
    let release!: () => void;
    const held = lock.run('x', () => new Promise<void>((resolve) => (release = resolve)));
    await lock.run('y', () => {
      log.push('y');
      return Promise.resolve();
    });
    expect(log).toEqual(['y']);
    release();
    await held;
  });
});

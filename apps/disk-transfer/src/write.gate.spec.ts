import { MemoryExportBackend } from '@wanmig/nbd';
import { describe, expect, it } from 'vitest';
import { WriteGate } from './write.gate.js';

describe('WriteGate', () => {
  it('marks every applied write, after it reached the backend', async () => {
    const backend = new MemoryExportBackend(1 << 20);
    const marks: Array<[number, number]> = [];
    const gate = new WriteGate(backend, (offset, length) => {
      marks.push([offset, length]);
    });
    await gate.write(4096, Buffer.alloc(512, 7), false);
    await gate.writeZeroes(0, 4096, false, false);
    expect(marks).toEqual([
      [4096, 512],
      [0, 4096],
    ]);
    expect((await backend.read(4096, 1))[0]).toBe(7);
  });

  it('freeze waits for writes inside the backend, holds new ones until thaw', async () => {
    const backend = new MemoryExportBackend(1 << 20);
    let release!: () => void;
    const slow = new Promise<void>((resolve) => (release = resolve));
    const original = backend.write.bind(backend);
    backend.write = async (o, d, f) => {
      await slow;
      return original(o, d, f);
    };
    const marked: number[] = [];
    const gate = new WriteGate(backend, (offset) => marked.push(offset));
    const inside = gate.write(0, Buffer.alloc(16, 1), false);
    let frozen = false;
    const freezing = gate.freeze().then(() => (frozen = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(frozen).toBe(false); // a write is still inside
    release();
    await freezing;
    await inside;
    expect(marked).toEqual([0]); // marked before freeze() resolved

    const held = gate.write(8192, Buffer.alloc(16, 2), false);
    await new Promise((r) => setTimeout(r, 20));
    expect(marked).toEqual([0]); // not applied while frozen
    gate.thaw();
    await held;
    expect(marked).toEqual([0, 8192]);
  });
});

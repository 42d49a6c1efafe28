import { describe, expect, it } from 'vitest';
import {
  LinkScheduler,
  MIN_QUEUE_MARGIN_BYTES,
  UNLIMITED_QUEUE_BYTES,
  isUnlimited,
  queueWatermarks,
} from './link.scheduler.js';

const MBIT = 1_000_000;
const KIB = 1024;

describe('LinkScheduler', () => {
  it('delivers a chunk after its serialisation time plus the one-way delay', () => {
    const link = new LinkScheduler({ delayMs: 50, bandwidthBps: 200 * MBIT });
    // 64 KiB at 200 Mbit/s = 65536 * 8 / 200e6 s = 2.62144 ms
    expect(link.schedule(64 * KIB, 1000)).toBeCloseTo(1000 + 2.62144 + 50, 6);
  });

  it('serialises back-to-back chunks so the long-run rate equals the configured rate', () => {
    const link = new LinkScheduler({ delayMs: 50, bandwidthBps: 200 * MBIT });
    const chunks = 1600; // 100 MiB arriving all at once
    let due = 0;
    for (let i = 0; i < chunks; i++) due = link.schedule(64 * KIB, 0);
    const bits = chunks * 64 * KIB * 8;
    expect(due - 50).toBeCloseTo((bits / (200 * MBIT)) * 1000, 6);
  });

  it('does not bank idle time: a chunk after a gap starts at its arrival', () => {
    const link = new LinkScheduler({ delayMs: 10, bandwidthBps: 8 * MBIT }); // 1 byte per microsecond
    expect(link.schedule(1000, 0)).toBeCloseTo(11, 9);
    expect(link.schedule(1000, 100)).toBeCloseTo(111, 9);
    expect(link.backlogMs(100)).toBeCloseTo(1, 9);
    expect(link.backlogMs(200)).toBe(0);
  });

  it('queues a chunk behind the previous one when the link is busy', () => {
    const link = new LinkScheduler({ delayMs: 0, bandwidthBps: 8 * MBIT });
    expect(link.schedule(1000, 0)).toBeCloseTo(1, 9);
    expect(link.schedule(1000, 0.5)).toBeCloseTo(2, 9);
  });

  it('applies only the delay when bandwidth is unlimited', () => {
    const link = new LinkScheduler({ delayMs: 25, bandwidthBps: 0 });
    expect(link.schedule(10 * 1024 * KIB, 5)).toBe(30);
    expect(link.transmitMs(1e9)).toBe(0);
  });

  it('schedules a zero-byte marker (FIN) right after the data before it', () => {
    const link = new LinkScheduler({ delayMs: 5, bandwidthBps: 8 * MBIT });
    const dataDue = link.schedule(1000, 0);
    expect(link.schedule(0, 0)).toBe(dataDue);
  });

  it('never lets due times decrease when the delay is lowered at runtime', () => {
    const link = new LinkScheduler({ delayMs: 100, bandwidthBps: 0 });
    const first = link.schedule(10, 0);
    link.update({ delayMs: 10 });
    expect(link.schedule(10, 1)).toBe(first);
    expect(link.schedule(10, 200)).toBe(210);
  });

  it('uses a new rate for chunks scheduled after the change', () => {
    const link = new LinkScheduler({ delayMs: 0, bandwidthBps: 8 * MBIT });
    link.schedule(1000, 0); // busy until 1 ms
    link.update({ bandwidthBps: 16 * MBIT });
    expect(link.schedule(1000, 0)).toBeCloseTo(1.5, 9);
    expect(link.settings).toEqual({ delayMs: 0, bandwidthBps: 16 * MBIT });
  });

  it('forgets in-flight state on reset', () => {
    const link = new LinkScheduler({ delayMs: 0, bandwidthBps: 8 * MBIT });
    link.schedule(1_000_000, 0);
    link.reset();
    expect(link.schedule(1000, 10)).toBeCloseTo(11, 9);
  });

  it('rejects negative or non-finite settings', () => {
    expect(() => new LinkScheduler({ delayMs: -1, bandwidthBps: 0 })).toThrow(RangeError);
    expect(() => new LinkScheduler({ delayMs: Number.NaN, bandwidthBps: 0 })).toThrow(RangeError);
    expect(() => new LinkScheduler({ delayMs: 0, bandwidthBps: -5 })).toThrow(RangeError);
  });
});

describe('queueWatermarks', () => {
  it('sizes the queue as bandwidth x delay plus a margin', () => {
    // 200 Mbit/s = 25 000 bytes/ms: 50 ms in flight = 1.25 MB, margin 25 ms = 625 kB
    const marks = queueWatermarks({ delayMs: 50, bandwidthBps: 200 * MBIT });
    expect(marks.high).toBe(1_250_000 + 625_000);
    expect(marks.low).toBe(1_250_000 + 312_500);
  });

  it('keeps at least one socket read of margin on slow links', () => {
    const marks = queueWatermarks({ delayMs: 0, bandwidthBps: MBIT });
    expect(marks.high).toBe(MIN_QUEUE_MARGIN_BYTES);
  });

  it('honours an explicit margin', () => {
    expect(queueWatermarks({ delayMs: 10, bandwidthBps: 8 * MBIT }, 1000)).toEqual({ high: 11_000, low: 10_500 });
  });

  it('caps the queue when the rate is unlimited', () => {
    expect(queueWatermarks({ delayMs: 50, bandwidthBps: 0 }).high).toBe(UNLIMITED_QUEUE_BYTES);
    expect(isUnlimited(Number.POSITIVE_INFINITY)).toBe(true);
    expect(isUnlimited(1)).toBe(false);
  });
});

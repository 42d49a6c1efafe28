import { describe, expect, it } from 'vitest';
import { DeliveryQueue } from './delivery.queue.js';

describe('DeliveryQueue', () => {
  it('returns everything due by a time, in order, in one batch', () => {
    const queue = new DeliveryQueue<string>();
    queue.push(1, 'a');
    queue.push(1, 'b');
    queue.push(5, 'c');
    expect(queue.nextDueAt).toBe(1);
    expect(queue.takeDue(0)).toEqual([]);
    expect(queue.takeDue(2)).toEqual(['a', 'b']);
    expect(queue.length).toBe(1);
    expect(queue.nextDueAt).toBe(5);
    expect(queue.takeDue(5)).toEqual(['c']);
    expect(queue.nextDueAt).toBeUndefined();
  });

  it('rejects due times that go backwards', () => {
    const queue = new DeliveryQueue<number>();
    queue.push(10, 1);
    expect(() => queue.push(9, 2)).toThrow(RangeError);
  });

  it('stays correct across compaction of a long consumed prefix', () => {
    const queue = new DeliveryQueue<number>();
    for (let i = 0; i < 5000; i++) queue.push(i, i);
    expect(queue.takeDue(2999)).toHaveLength(3000);
    for (let i = 5000; i < 6000; i++) queue.push(i, i);
    expect(queue.length).toBe(3000);
    expect(queue.takeDue(Number.POSITIVE_INFINITY)[0]).toBe(3000);
  });

  it('clear() returns what was pending and empties the queue', () => {
    const queue = new DeliveryQueue<string>();
    queue.push(1, 'a');
    queue.push(2, 'b');
    queue.takeDue(1);
    expect(queue.clear()).toEqual(['b']);
    expect(queue.length).toBe(0);
    queue.push(0, 'fresh');
    expect(queue.takeDue(0)).toEqual(['fresh']);
  });
});

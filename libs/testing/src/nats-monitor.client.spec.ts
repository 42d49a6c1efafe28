import { describe, expect, it } from 'vitest';
import { subjectMatches } from './nats-monitor.client.js';

describe('subjectMatches', () => {
  it.each([
    ['a.b', 'a.b', true],
    ['a.b', 'a.c', false],
    ['a.*', 'a.b', true],
    ['a.*', 'a.b.c', false],
    ['a.>', 'a.b.c', true],
    ['a.>', 'a', false],
    ['>', 'x', true],
    ['a.b q1', 'a.b', true],
    ['a.b.c', 'a.b', false],
  ])('%s vs %s -> %s', (filter, subject, expected) => {
    expect(subjectMatches(filter, subject)).toBe(expected);
  });
});

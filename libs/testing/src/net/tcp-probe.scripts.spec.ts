import { Script } from 'node:vm';
import { describe, expect, it } from 'vitest';
import {
  parseProbeEvents,
  summarizeProbe,
  TCP_PROBE_CLIENT_SCRIPT,
  TCP_PROBE_SERVER_SCRIPT,
} from './tcp-probe.scripts.js';

const lines = (events: object[]): string => events.map((e) => JSON.stringify(e)).join('\n') + '\n';

describe('tcp probe scripts', () => {
  it('are valid JavaScript that keeps its newline escapes', () => {
    for (const script of [TCP_PROBE_SERVER_SCRIPT, TCP_PROBE_CLIENT_SCRIPT]) {
      // Compiled, not run: a syntax error would throw here.
      expect(() => new Script(script)).not.toThrow();
      expect(script).toContain(String.raw`'\n'`);
    }
  });

  it('parses complete event lines and ignores a partial last line and strangers', () => {
    const out = lines([{ at: 1, event: 'connected' }]) + 'a warning\n' + '{"at":2,"event":"li';
    expect(parseProbeEvents(out)).toEqual([{ at: 1, event: 'connected' }]);
  });

  it('counts lines per label, the longest gap, and how the connection ended', () => {
    const events = parseProbeEvents(
      lines([
        { at: 1000, event: 'connected' },
        { at: 1050, event: 'line', text: 'A 1' },
        { at: 1100, event: 'line', text: 'A 2' },
        { at: 1400, event: 'line', text: 'A 3' },
        { at: 1420, event: 'error', code: 'ECONNRESET', message: 'read ECONNRESET' },
        { at: 1421, event: 'closed' },
      ]),
    );
    expect(summarizeProbe(events)).toEqual({
      connected: true,
      lines: 3,
      labels: { A: 3 },
      firstLineAt: 1050,
      lastLineAt: 1400,
      maxGapMs: 300,
      outcome: 'reset',
      error: 'ECONNRESET',
      endedAt: 1420,
    });
    expect(summarizeProbe(events, 1100)).toMatchObject({ lines: 2, labels: { A: 2 }, firstLineAt: 1100 });
  });

  it('tells a peer close, a time limit, a stop and a running connection apart', () => {
    const at = (event: string, t = 5) => ({ at: t, event });
    expect(summarizeProbe(parseProbeEvents(lines([at('connected'), at('end'), at('closed')]))).outcome).toBe(
      'peer-closed',
    );
    expect(summarizeProbe(parseProbeEvents(lines([at('connected'), at('timeout'), at('closed')]))).outcome).toBe(
      'timeout',
    );
    expect(summarizeProbe(parseProbeEvents(lines([at('connected'), at('stopped')]))).outcome).toBe('stopped');
    expect(summarizeProbe(parseProbeEvents(lines([at('connected')]))).outcome).toBe('running');
    const refused = summarizeProbe(
      parseProbeEvents(lines([{ at: 1, event: 'error', code: 'ECONNREFUSED' }, at('closed')])),
    );
    expect(refused).toMatchObject({ connected: false, outcome: 'error', error: 'ECONNREFUSED' });
  });
});

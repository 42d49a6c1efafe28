import { describe, expect, it } from 'vitest';
import { lastJsonLine, runCli } from '../support/cli.runner.js';

interface VmRunJson {
  report: {
    stopReason: string;
    throttlePercent: number;
    rounds: unknown[];
    ramVerified: boolean;
    answersAtPause: Record<string, string>;
    answersAtDestination: Record<string, string>;
  };
  probe: { maxGapMs: number; answersAfterSwitch: number; counterWentBack: boolean };
  answersMatch: boolean;
  counterContinued: boolean;
}

async function migrate(workload: string): Promise<VmRunJson> {
  const res = await runCli([
    'vm',
    'migrate',
    '--ram',
    '128MiB',
    '--workload',
    workload,
    '--delay',
    '50ms',
    '--bandwidth',
    '200mbit',
    '--verify-ram',
    '--json',
  ]);
  expect(res.code, res.stderr).toBe(0);
  return lastJsonLine<VmRunJson>(res.stdout);
}

describe('wanmig vm migrate (built CLI, sim guest, 50 ms / 200 Mbit/s)', () => {
  for (const workload of ['idle', 'web', 'db']) {
    it(`moves a running ${workload} guest: RAM equal at pause, same answers, counter continues`, async () => {
      const run = await migrate(workload);
      expect(run.report.ramVerified).toBe(true);
      expect(run.answersMatch).toBe(true);
      expect(Object.keys(run.report.answersAtPause).length).toBeGreaterThanOrEqual(5);
      expect(run.counterContinued).toBe(true);
      expect(run.probe.counterWentBack).toBe(false);
      expect(run.probe.answersAfterSwitch).toBeGreaterThan(0);
    });
  }

  it('converges with the write-heavy guest (throttled) instead of looping', async () => {
    const run = await migrate('write-heavy');
    expect(run.report.throttlePercent).toBeGreaterThan(0);
    expect(run.report.rounds.length).toBeLessThanOrEqual(30);
    expect(run.report.ramVerified).toBe(true);
    expect(run.answersMatch).toBe(true);
    expect(run.counterContinued).toBe(true);
  });
});

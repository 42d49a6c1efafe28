import { describe, expect, it } from 'vitest';
import { lastJsonLine, runCli } from '../support/cli.runner.js';

interface DiskRunJson {
  report: {
    sizeBytes: number;
    resentBytes: number;
    converged: boolean;
    verified: boolean | null;
    downtimeMs: number;
    rounds: unknown[];
    throttle: { engaged: boolean; writesDelayed: number; totalDelayMs: number };
  };
  sourceSha256: string;
  destinationSha256: string;
  workload: { writes: number; bytesPerSecond: number; targetBytesPerSecond: number } | null;
  destinationRestarts: number;
}

describe('wanmig disk migrate (built CLI, two-site bed, real services)', () => {
  it('moves a disk under continuous random writes; destination equals source after the final drain', async () => {
    const res = await runCli([
      'disk',
      'migrate',
      '--size',
      '128MiB',
      '--written',
      '32MiB',
      '--delay',
      '10ms',
      '--bandwidth',
      '100mbit',
      '--workload-rate',
      '4MB',
      '--json',
    ]);
    expect(res.code, res.stderr).toBe(0);
    const run = lastJsonLine<DiskRunJson>(res.stdout);
    expect(run.destinationSha256).toBe(run.sourceSha256);
    expect(run.report.verified).toBe(true);
    expect(run.workload!.writes).toBeGreaterThan(10);
    expect(res.stdout).toMatch(/source = destination\s+yes/);
  });

  it('survives kill -9 of the destination service at half the bulk pass, re-sending ≤ 5 % of the disk', async () => {
    const res = await runCli([
      'disk',
      'migrate',
      '--size',
      '256MiB',
      '--written',
      '128MiB',
      '--delay',
      '10ms',
      '--bandwidth',
      '100mbit',
      '--budget',
      '100mbit',
      '--crash-destination-at',
      '0.5',
      '--json',
    ]);
    expect(res.code, res.stderr).toBe(0);
    const run = lastJsonLine<DiskRunJson>(res.stdout);
    expect(run.destinationRestarts).toBe(1);
    expect(res.stderr).toMatch(/kill -9 of delta-apply/);
    expect(run.destinationSha256).toBe(run.sourceSha256);
    expect(run.report.resentBytes).toBeLessThanOrEqual(0.05 * run.report.sizeBytes);
  });

  it('converges with a guest writing incompressible data at twice the link rate, by throttling it', async () => {
    const res = await runCli([
      'disk',
      'migrate',
      '--size',
      '128MiB',
      '--written',
      '32MiB',
      '--delay',
      '10ms',
      '--bandwidth',
      '40mbit',
      '--workload-rate',
      '10MB',
      '--workload-data',
      'random',
      '--json',
    ]);
    expect(res.code, res.stderr).toBe(0);
    const run = lastJsonLine<DiskRunJson>(res.stdout);
    expect(run.report.converged).toBe(true);
    expect(run.report.throttle.engaged).toBe(true);
    expect(run.report.throttle.writesDelayed).toBeGreaterThan(0);
    expect(run.workload!.bytesPerSecond).toBeLessThan(run.workload!.targetBytesPerSecond);
    expect(run.destinationSha256).toBe(run.sourceSha256);
    expect(res.stdout).toMatch(/write throttle\s+engaged/);
  });

  it('fails with one clear line and a non-zero code for an image that does not exist', async () => {
    const res = await runCli(['disk', 'migrate', '--image', '/nonexistent/disk.img', '--delay', '1ms']);
    expect(res.code).not.toBe(0);
    expect(res.stderr).toMatch(/wanmig: .*nonexistent/);
  });

  it('rejects unknown options with a usage error', async () => {
    const res = await runCli(['disk', 'migrate', '--frobnicate']);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/^wanmig: /m);
  });
});

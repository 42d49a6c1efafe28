import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FORWARD_PHASES } from '@wanmig/protocol';
import { netAvailable, netUnavailableMessage, trackPid, untrackPid } from '@wanmig/testing';
import { CLI, lastJsonLine, runCli } from '../support/cli.runner.js';

const netSkipped = netUnavailableMessage(await netAvailable());

/**
 * The built `wanmig` as an operator uses it: `up` in one terminal, the other commands in another, judged by what
 * they print and how they exit.
 */
describe('wanmig up, vm, migrate, status, events, abort (built CLI)', () => {
  let dir: string;
  let env: Record<string, string>;
  let stack: ChildProcess;
  let stackOut = '';

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-cli-'));
    env = { WANMIG_STACK_FILE: join(dir, 'stack.json') };
    stack = spawn(process.execPath, [CLI, 'up', '--wan-delay', '10ms', '--wan-bandwidth', '400mbit'], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    trackPid(stack.pid!);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`wanmig up not ready:\n${stackOut}`)), 90_000);
      stack.stdout!.on('data', (chunk: Buffer) => {
        stackOut += chunk.toString();
        if (stackOut.includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      stack.stderr!.on('data', (chunk: Buffer) => (stackOut += chunk.toString()));
      stack.once('exit', (code) => reject(new Error(`wanmig up exited ${code}:\n${stackOut}`)));
    });
  }, 120_000);

  afterAll(async () => {
    if (stack && stack.exitCode === null) {
      const exited = new Promise((resolve) => stack.once('exit', resolve));
      stack.kill('SIGTERM');
      await exited;
    }
    if (stack?.pid) untrackPid(stack.pid);
    await rm(dir, { recursive: true, force: true });
  });

  const cli = (...args: string[]) => runCli(args, 240_000, env);

  it('up reports both sites and leaves a stack file', () => {
    expect(stackOut).toMatch(/site-a\s+nats nats:\/\/127\.0\.0\.1:\d+/);
    expect(stackOut).toMatch(/site-b\s+nats nats:\/\/127\.0\.0\.1:\d+/);
    expect(existsSync(env.WANMIG_STACK_FILE)).toBe(true);
  });

  it('creates, lists, moves, reports on and removes a VM', async () => {
    const created = await cli('vm', 'create', 'shop', '--ram', '64MiB', '--disk', '64MiB', '--workload', 'db');
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/^shop runs at site-a, service 127\.0\.0\.1:\d+/);

    const listed = await cli('vm', 'list', '--json');
    expect(lastJsonLine<{ vms: Array<{ vmId: string; site: string; state: string }> }>(listed.stdout).vms).toEqual([
      expect.objectContaining({ vmId: 'shop', site: 'site-a', state: 'running' }),
    ]);

    const moved = await cli('migrate', 'shop', '--to', 'site-b', '--follow', '--json');
    expect(moved.code, moved.stderr).toBe(0);
    const m = lastJsonLine<{ id: string; phase: string; figures: Record<string, unknown> }>(moved.stdout);
    expect(m.phase).toBe('COMMITTED');
    expect(m.figures).toMatchObject({ diskVerified: true, ramVerified: true, answersMatch: true });
    expect(moved.stdout).toMatch(/verified\s+disk equal, RAM equal, answers at both ends same/);
    // Phase lines on stderr as it went.
    for (const phase of ['DISK_BULK', 'MEM_PRECOPY', 'STOP_AND_COPY', 'COMMITTED'])
      expect(moved.stderr).toContain(phase);

    const table = await cli('vm', 'list');
    expect(table.stdout).toMatch(/^shop\s+site-b\s+sim\s+running/m);

    const one = await cli('status', m.id);
    expect(one.code).toBe(0);
    expect(one.stdout).toMatch(/^phase\s+COMMITTED$/m);
    const all = await cli('status', '--json');
    expect(lastJsonLine<{ migrations: Array<{ id: string }> }>(all.stdout).migrations.map((x) => x.id)).toContain(m.id);

    const events = await cli('events', m.id);
    expect(events.code).toBe(0);
    expect(events.stdout).toMatch(/phase-changed\s+ACTIVATE → COMMITTED/);
    expect(events.stdout.trim().split('\n').at(-1)).toMatch(/completed/);

    const late = await cli('abort', m.id);
    expect(late.code).toBe(1);
    expect(late.stderr.trim().split('\n')).toHaveLength(1);
    expect(late.stderr).toMatch(/^wanmig: .*cannot be aborted in COMMITTED.*\(CONFLICT\)$/m);

    const removed = await cli('vm', 'rm', 'shop');
    expect(removed.code, removed.stderr).toBe(0);
    expect((await cli('vm', 'list', '--json')).stdout).toContain('"vms":[]');
  }, 300_000);

  it('answers bad input with one line and a non-zero exit, changing nothing', async () => {
    const cases: Array<[string[], number, RegExp]> = [
      [['migrate', 'ghost', '--to', 'site-b'], 1, /^wanmig: no VM ghost at any site \(NOT_FOUND\)$/],
      [['migrate', 'ghost'], 2, /^wanmig: migrate needs --to SITE$/],
      [['status', '6b0f4c9e-8a52-4a9e-9a4b-0d6a3e0f1a11'], 1, /\(NOT_FOUND\)$/],
      [['vm', 'create', 'x', '--ram', 'lots'], 2, /^wanmig: --ram/],
      [['vm', 'explode'], 2, /^wanmig: unknown vm command/],
      [['vm', 'adopt', 'x', '--disk', 'disk0'], 2, /^wanmig: usage: wanmig vm adopt NAME --qmp SOCKET --disk NODE$/],
      [['vm', 'create', 'x', '--driver', 'qemu', '--guest', 'test', '--ram', '500MB'], 2, /whole MiB \(try 500MiB\)$/],
      [['vm', 'create', 'x', '--driver', 'qemu'], 2, /^wanmig: --driver qemu needs --guest test/],
    ];
    for (const [args, code, message] of cases) {
      const res = await cli(...args);
      expect(res.code, `${args.join(' ')}: ${res.stderr}`).toBe(code);
      expect(res.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(res.stderr.trim(), args.join(' ')).toMatch(message);
    }
    const twice = await cli('vm', 'create', 'dup', '--ram', '64MiB', '--disk', '16MiB');
    expect(twice.code, twice.stderr).toBe(0);
    const again = await cli('vm', 'create', 'dup', '--ram', '64MiB', '--disk', '16MiB');
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toMatch(/already exists at site-a \(CONFLICT\)$/);
    const here = await cli('migrate', 'dup', '--to', 'site-a');
    expect(here.code).toBe(1);
    expect(here.stderr.trim()).toMatch(/already at site-a \(INVALID_REQUEST\)$/);
    expect((await cli('vm', 'rm', 'dup')).code).toBe(0);
    expect((await cli('status', '--json')).stdout).not.toContain('"vmId":"dup"');
  }, 120_000);

  it('answers --help for each vm command: its usage on stdout, exit 0', async () => {
    for (const command of ['create', 'adopt', 'list', 'rm']) {
      const res = await cli('vm', command, '--help');
      expect(res.code, `vm ${command} --help: ${res.stderr}`).toBe(0);
      expect(res.stdout).toMatch(/^usage:\n/);
      expect(res.stdout).toContain('wanmig vm adopt NAME --qmp SOCKET --disk NODE');
    }
  });
});

describe('wanmig demo and drill (built CLI, embedded stack)', () => {
  const noStack = { WANMIG_STACK_FILE: join(tmpdir(), 'wanmig-no-stack', 'none.json') };

  it('demo --json: a verified move, one JSON report on the last line', async () => {
    const res = await runCli(['demo', '--ram', '128MiB', '--disk', '128MiB', '--json'], 300_000, noStack);
    expect(res.code, res.stderr).toBe(0);
    const report = lastJsonLine<{
      verified: boolean;
      downtimeMs: number;
      wireBytes: number;
      rawBytes: number;
      totalSeconds: number;
      phases: Array<{ name: string; start: string; end: string }>;
      redirect: {
        skipped?: string;
        firstAnswerMs?: number;
        relayedConnections?: number;
        sameConnection?: boolean;
        newConnectionAtDestination?: boolean;
      };
    }>(res.stdout);
    expect(report.verified).toBe(true);
    expect(report.downtimeMs).toBeGreaterThan(0);
    expect(report.wireBytes).toBeGreaterThan(0);
    expect(report.wireBytes).toBeLessThan(report.rawBytes);
    expect(report.totalSeconds).toBeGreaterThan(0);
    expect(report.phases.map((p) => p.name)).toEqual(FORWARD_PHASES);
    // With namespaces, the client held one connection to the VM's own address across the move.
    if (netSkipped) expect(report.redirect.skipped).toBe(netSkipped);
    else {
      expect(report.redirect).toMatchObject({ sameConnection: true, newConnectionAtDestination: true });
      expect(report.redirect.firstAnswerMs).toBeGreaterThan(0);
      expect(report.redirect.relayedConnections).toBeGreaterThanOrEqual(1);
    }
    expect(res.stdout).toMatch(/^verified\s+yes$/m);
  }, 320_000);

  it('drill moves 4 guests two at a time, sharing the budget, and back', async () => {
    const res = await runCli(
      [
        'drill',
        '--create',
        '4',
        '--concurrency',
        '2',
        '--bandwidth',
        '200mbit',
        '--ram',
        '64MiB',
        '--disk',
        '64MiB',
        '--wan-delay',
        '20ms',
        '--wan-bandwidth',
        '200mbit',
        '--back',
        '--json',
      ],
      600_000,
      noStack,
    );
    expect(res.code, res.stderr).toBe(0);
    const report = lastJsonLine<{
      verified: boolean;
      moves: Array<{
        vmId: string;
        from: string;
        to: string;
        verified: boolean;
        bandwidthBps: number;
        startedAt: number;
        endedAt: number;
      }>;
      totals: { moves: number; verified: number; rawBytes: number; frameBytes: number; wanBytes: number };
    }>(res.stdout);
    expect(report.verified).toBe(true);
    expect(report.totals).toMatchObject({ moves: 8, verified: 8 });
    expect(report.moves.slice(0, 4).map((m) => [m.vmId, m.from, m.to])).toEqual(
      [1, 2, 3, 4].map((i) => [`drill-${i}`, 'site-a', 'site-b']),
    );
    expect(report.moves.slice(4).every((m) => m.from === 'site-b' && m.to === 'site-a')).toBe(true);
    // Each migration got half of the 200 Mbit/s budget: two in flight share it.
    expect(report.moves.every((m) => m.bandwidthBps === 100e6)).toBe(true);
    const outbound = report.moves.slice(0, 4);
    const overlap = (t: number) => outbound.filter((m) => m.startedAt <= t && t < m.endedAt).length;
    const peak = Math.max(...outbound.map((m) => overlap(m.startedAt)));
    expect(peak).toBe(2);
    expect(report.totals.wanBytes).toBeGreaterThan(0);
    expect(res.stdout).toMatch(/^totals: 8\/8 moves verified/m);
  }, 620_000);
});

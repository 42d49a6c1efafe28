import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI } from '../support/cli.runner.js';

const run = promisify(execFile);

describe('wanmig disk serve (built CLI) with NBD tools this project did not write', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-serve-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a sparse image, serves it on a unix socket until SIGTERM, and reports the writes', async () => {
    const image = join(dir, 'disk.img');
    const socket = join(dir, 'nbd.sock');
    const child = spawn(process.execPath, [
      CLI,
      'disk',
      'serve',
      '--image',
      image,
      '--size',
      '32MiB',
      '--socket',
      socket,
    ]);
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    const exited = new Promise<number>((resolve) => child.once('exit', (code) => resolve(code ?? -1)));
    try {
      for (let i = 0; i < 100 && !stdout.includes('serving'); i++) await new Promise((r) => setTimeout(r, 100));
      expect(stdout).toMatch(/serving .*disk\.img \(33554432 bytes, serve\) at nbd\+unix/);
      const uri = `nbd+unix:///disk?socket=${socket}`;
      const info = await run('nbdinfo', ['--size', uri]);
      expect(info.stdout.trim()).toBe('33554432');
      const write = await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 4M 128k', uri]);
      expect(write.stdout).toMatch(/wrote 131072\/131072/);
      const read = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x3c 4M 128k', uri]);
      expect(read.stdout).not.toMatch(/Pattern verification failed/);
      expect((await stat(image)).size).toBe(32 * 1024 * 1024);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(stdout).toMatch(/stopped; 131072 bytes written while served/);
  });

  it('refuses to run without a listener', async () => {
    const res = await run(process.execPath, [CLI, 'disk', 'serve', '--image', join(dir, 'x.img')]).catch(
      (err: { code: number; stderr: string }) => err,
    );
    expect((res as { code: number }).code).toBe(2);
    expect((res as { stderr: string }).stderr).toMatch(/--socket PATH or --port N/);
  });
});

import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, createReadStream } from 'node:fs';
import { mkdtemp, open, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FileExportBackend, NbdServer, type NbdAddress } from '@wanmig/nbd';

const run = promisify(execFile);
const MiB = 1024 * 1024;

function findTool(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

const tools = {
  nbdinfo: findTool('nbdinfo'),
  nbdcopy: findTool('nbdcopy'),
  qemuImg: findTool('qemu-img'),
  qemuIo: findTool('qemu-io'),
};
for (const [name, path] of Object.entries(tools)) {
  if (!path)
    console.warn(`nbd-tools: ${name} is not installed (apt-get install qemu-utils libnbd-bin); its tests are skipped`);
}

async function tool(bin: string | undefined, args: string[], timeout = 60_000): Promise<string> {
  const { stdout } = await run(bin!, args, { timeout, maxBuffer: 64 * MiB });
  return stdout;
}

/** Stdout whatever the exit status (qemu-io's exit status on a failed pattern check varies by version). */
async function toolOutput(bin: string | undefined, args: string[], timeout = 60_000): Promise<string> {
  try {
    return await tool(bin, args, timeout);
  } catch (err) {
    const stdout = (err as { stdout?: string | Buffer }).stdout;
    return typeof stdout === 'string' ? stdout : (stdout?.toString('utf8') ?? '');
  }
}

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** A sparse image: `dataMiB` MiB of random data at the start of every `strideMiB` MiB, holes elsewhere. */
async function makeImage(path: string, size: number, strideMiB = 4, dataMiB = 1): Promise<void> {
  await writeFile(path, '');
  await truncate(path, size);
  const fh = await open(path, 'r+');
  try {
    for (let off = 0; off < size; off += strideMiB * MiB) {
      const chunk = randomBytes(Math.min(dataMiB * MiB, size - off));
      await fh.write(chunk, 0, chunk.length, off);
    }
  } finally {
    await fh.close();
  }
}

async function blankImage(path: string, size: number): Promise<void> {
  await writeFile(path, '');
  await truncate(path, size);
}

interface Served {
  server: NbdServer;
  backend: FileExportBackend;
  tcp: NbdAddress;
  unix: NbdAddress;
  close(): Promise<void>;
}

async function serve(path: string, dir: string, name: string): Promise<Served> {
  const backend = await FileExportBackend.open(path);
  const server = new NbdServer({ exports: [{ name: '', backend }] });
  const tcp = await server.listen({ port: 0 });
  const unix = await server.listen({ path: join(dir, `${name}.sock`) });
  return {
    server,
    backend,
    tcp,
    unix,
    close: async () => {
      await server.close();
      await backend.close();
    },
  };
}

describe('NbdServer with the Debian NBD tools', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wanmig-nbd-tools-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.skipIf(!tools.nbdinfo)('nbdinfo reports the export size over TCP and a unix socket', async () => {
    const img = join(dir, 'info.raw');
    await blankImage(img, 64 * MiB);
    const s = await serve(img, dir, 'info');
    try {
      for (const uri of [s.tcp.uri, s.unix.uri]) {
        const out = JSON.parse(await tool(tools.nbdinfo, ['--json', uri])) as {
          exports: { 'export-size': number; can_flush: boolean; can_zero: boolean; can_multi_conn: boolean }[];
          protocol: string;
        };
        expect(out.protocol).toBe('newstyle-fixed');
        expect(out.exports[0]['export-size']).toBe(64 * MiB);
        expect(out.exports[0].can_flush).toBe(true);
        expect(out.exports[0].can_zero).toBe(true);
        expect(await tool(tools.nbdinfo, ['--size', uri])).toBe(`${64 * MiB}\n`);
      }
    } finally {
      await s.close();
    }
  });

  it.skipIf(!tools.qemuImg)('qemu-img convert copies a sparse image in and out unchanged', async () => {
    const src = join(dir, 'qsrc.raw');
    const dst = join(dir, 'qdst.raw');
    const out = join(dir, 'qout.raw');
    await makeImage(src, 64 * MiB, 4, 1);
    await blankImage(dst, 64 * MiB);
    const s = await serve(dst, dir, 'qemu');
    try {
      await tool(tools.qemuImg, ['convert', '-f', 'raw', '-O', 'raw', src, s.tcp.uri]);
      await tool(tools.qemuImg, ['convert', '-f', 'raw', '-O', 'raw', s.unix.uri, out]);
      expect(await sha256(dst)).toBe(await sha256(src));
      expect(await sha256(out)).toBe(await sha256(src));
      // Zero ranges were skipped rather than written: the image stays sparse.
      expect((await stat(dst)).blocks * 512).toBeLessThan(20 * MiB);
    } finally {
      await s.close();
    }
  });

  it.skipIf(!tools.qemuImg)(
    // Correctness only: the rate is printed, not asserted (a shared, loaded machine is no place for a speed limit;
    // `wanmig bench disk` measures speed against a baseline side by side).
    'qemu-img convert moves 256 MiB of random data each way, unchanged',
    async () => {
      const size = 256 * MiB;
      const src = join(dir, 'psrc.raw');
      const dst = join(dir, 'pdst.raw');
      const out = join(dir, 'pout.raw');
      await makeImage(src, size, 256, 256);
      await blankImage(dst, size);
      const s = await serve(dst, dir, 'perf');
      try {
        const t0 = performance.now();
        await tool(tools.qemuImg, ['convert', '-n', '-f', 'raw', '-O', 'raw', src, s.tcp.uri]);
        const inMs = performance.now() - t0;
        const t1 = performance.now();
        await tool(tools.qemuImg, ['convert', '-f', 'raw', '-O', 'raw', s.tcp.uri, out]);
        const outMs = performance.now() - t1;
        const rate = (ms: number) => size / 1e6 / (ms / 1000);
        console.info(
          `qemu-img convert 256 MiB over loopback TCP: in ${inMs.toFixed(0)} ms (${rate(inMs).toFixed(0)} MB/s), ` +
            `out ${outMs.toFixed(0)} ms (${rate(outMs).toFixed(0)} MB/s)`,
        );
        expect(await sha256(dst)).toBe(await sha256(src));
        expect(await sha256(out)).toBe(await sha256(src));
      } finally {
        await s.close();
        await rm(src, { force: true });
        await rm(dst, { force: true });
        await rm(out, { force: true });
      }
    },
  );

  it.skipIf(!tools.qemuIo)('qemu-io random pattern writes read back with pattern verification', async () => {
    const img = join(dir, 'io.raw');
    await blankImage(img, 32 * MiB);
    const s = await serve(img, dir, 'io');
    try {
      const spots = Array.from({ length: 24 }, (_, i) => {
        const offset = (i * 1_337_011) % (32 * MiB - 131072);
        return {
          offset: offset - (offset % 512),
          length: 512 * (1 + ((i * 37) % 200)),
          pattern: (0x10 + i * 7) & 0xff,
        };
      });
      const writeArgs = spots.flatMap((p) => ['-c', `write -P 0x${p.pattern.toString(16)} ${p.offset} ${p.length}`]);
      const w = await tool(tools.qemuIo, ['-f', 'raw', ...writeArgs, s.tcp.uri]);
      expect(w).not.toMatch(/error|failed/i);
      // Later spots may overlap earlier ones: verify each against the last pattern written over it.
      const last = spots.filter(
        (p, i) => !spots.slice(i + 1).some((q) => q.offset < p.offset + p.length && p.offset < q.offset + q.length),
      );
      const readArgs = last.flatMap((p) => ['-c', `read -P 0x${p.pattern.toString(16)} ${p.offset} ${p.length}`]);
      const r = await tool(tools.qemuIo, ['-f', 'raw', ...readArgs, s.unix.uri]);
      expect(r).not.toContain('Pattern verification failed');
      expect(r.match(/^read \d+\/\d+ bytes/gm)?.length).toBe(last.length);
      const bad = await toolOutput(tools.qemuIo, ['-f', 'raw', '-c', `read -P 0x01 ${spots[0].offset} 512`, s.tcp.uri]);
      expect(bad).toContain('Pattern verification failed');
    } finally {
      await s.close();
    }
  });

  it.skipIf(!tools.nbdcopy)('nbdcopy copies a full image in and out', async () => {
    const src = join(dir, 'csrc.raw');
    const dst = join(dir, 'cdst.raw');
    const out = join(dir, 'cout.raw');
    await makeImage(src, 64 * MiB, 2, 1);
    await blankImage(dst, 64 * MiB);
    const s = await serve(dst, dir, 'copy');
    try {
      await tool(tools.nbdcopy, [src, s.tcp.uri]);
      await tool(tools.nbdcopy, [s.unix.uri, out]);
      expect(await sha256(dst)).toBe(await sha256(src));
      expect(await sha256(out)).toBe(await sha256(src));
    } finally {
      await s.close();
    }
  });

  it.skipIf(!tools.nbdinfo)('nbdinfo --map shows data and holes', async () => {
    const img = join(dir, 'map.raw');
    await makeImage(img, 16 * MiB, 8, 1);
    const s = await serve(img, dir, 'map');
    try {
      const map = JSON.parse(await tool(tools.nbdinfo, ['--json', '--map', s.tcp.uri])) as {
        offset: number;
        length: number;
        type: number;
        description: string;
      }[];
      expect(map.map((e) => [e.offset, e.length, e.description])).toEqual([
        [0, MiB, 'data'],
        [MiB, 7 * MiB, 'hole,zero'],
        [8 * MiB, MiB, 'data'],
        [9 * MiB, 7 * MiB, 'hole,zero'],
      ]);
    } finally {
      await s.close();
    }
  });
});

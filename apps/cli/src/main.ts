#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { parseBitRate, parseDuration, parseSize, UnitError } from '@wanmig/service';
import { runDiskBench } from './bench/disk.bench.js';
import { formatDiskBench } from './bench/disk-bench.report.js';
import { formatMemoryBench, runMemoryBench } from './bench/memory.bench.js';
import {
  DEFAULT_INTEGRITY_OPTIONS,
  formatIntegrityBench,
  IntegrityDriver,
  integrityHolds,
  runIntegrityBench,
} from './bench/integrity.bench.js';
import { DEFAULT_QEMU_BENCH_OPTIONS, nothingWrong, QEMU_BENCH_RUNS, runQemuBench } from './bench/qemu.bench.js';
import type { QemuBenchOptions } from './bench/qemu-bench.types.js';
import { formatQemuBench } from './bench/qemu-bench.report.js';
import { UsageError } from './errors.js';
import { formatStreamBench } from './bench/stream-bench.report.js';
import { runStreamBench } from './bench/stream.bench.js';
import { streamBenchOptions } from './bench/stream-bench.options.js';
import { DISK_USAGE, diskMigrate, diskServe } from './disk/disk.command.js';
import { VM_USAGE, vmMigrate } from './vm/vm.command.js';
import { demo, DEMO_USAGE } from './commands/demo.command.js';
import { drill, DRILL_USAGE } from './commands/drill.command.js';
import { INVENTORY_USAGE, vmAdopt, vmCreate, vmList, vmRemove } from './commands/inventory.command.js';
import { abort, events, migrate, MIGRATION_USAGE, status } from './commands/migration.command.js';
import { up, UP_USAGE } from './commands/up.command.js';
import { WanmigError } from '@wanmig/protocol';

const USAGE = `usage: wanmig <command> [options]

start here:
  demo                 move a running guest (disk, memory, state) across an emulated 50 ms / 200 Mbit/s WAN
${DEMO_USAGE}

a local two-site stack, and the commands that drive it (through the orchestrators' NATS API):
${UP_USAGE}
${INVENTORY_USAGE}
${MIGRATION_USAGE}
${DRILL_USAGE}

lower level:
  disk serve           serve a raw image over NBD, tracking writes (see: wanmig disk serve --help)
  disk migrate         disk-only migration between the two sites of a private bed
  vm migrate           memory-only move of a throwaway guest on a private bed (see below)
  bench disk           qemu-img convert vs wanmig for one disk over the same emulated WAN
    --size 4GiB --written 1GiB --delay 50ms --bandwidth 200mbit --json
  bench memory         plain pre-copy vs wanmig for one guest over the same emulated WAN
    --ram 1GiB --workload web --delay 50ms --bandwidth 200mbit --downtime 300ms --json
  bench qemu           a real QEMU guest moved three ways over the same emulated WAN: QEMU as libvirt
                       does it (defaults; multifd zstd) and wanmig
    --ram 512MiB --delay 50ms --bandwidth 200mbit --warmup 5s --json
    --no-verify          wanmig's move without its disk check in the pause (the product's default checks)
    --runs qemu,qemuTuned,wanmig   make only these runs (ratios need both sides)
  bench integrity      one guest moved again and again beside CPU burners; RAM and disk compared at both ends
    --driver sim|qemu --runs 10 --burners 2 --ram 128MiB --disk 128MiB --delay 20ms --bandwidth 400mbit --json
                       exits 0 only if every move was made and nothing differed
  bench stream         data-plane benchmark: stream+codec across the two-site bed
    --delay 50ms         one-way delay          --bandwidth 200mbit   link rate
    --size 512MiB        payload size           --mix random|mixed|text|zero
    --cut-at 0.5         cut the link at this fraction of the payload ...
    --cut-for 10s        ... for this long      --loopback            no emulator, one server
    --no-codec           send every page raw    --window 16MiB        stream window
    --json               last line: the result as one JSON object

${DISK_USAGE}
${VM_USAGE}`;

const BENCH_OPTIONS = {
  delay: { type: 'string' },
  bandwidth: { type: 'string' },
  size: { type: 'string' },
  mix: { type: 'string' },
  seed: { type: 'string' },
  'cut-at': { type: 'string' },
  'cut-for': { type: 'string' },
  window: { type: 'string' },
  loopback: { type: 'boolean' },
  'no-codec': { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

async function benchStream(argv: string[], defaults: Record<string, string | boolean> = {}): Promise<boolean> {
  const { values } = parseArgs({ args: argv, options: BENCH_OPTIONS, strict: true });
  if (values.help) {
    process.stdout.write(USAGE);
    return true;
  }
  const options = streamBenchOptions({ ...defaults, ...values });
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const result = await runStreamBench(options, log);
  process.stdout.write(`${formatStreamBench(result)}\n`);
  if (options.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  return result.sha256Match;
}

async function benchDisk(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      size: { type: 'string', default: '4GiB' },
      written: { type: 'string', default: '1GiB' },
      delay: { type: 'string', default: '50ms' },
      bandwidth: { type: 'string', default: '200mbit' },
      json: { type: 'boolean' },
    },
  });
  const result = await runDiskBench(
    {
      sizeBytes: parseSize(values.size, '--size'),
      writtenBytes: parseSize(values.written, '--written'),
      delayMs: parseDuration(values.delay, '--delay'),
      bandwidthBps: parseBitRate(values.bandwidth, '--bandwidth'),
    },
    (line) => process.stderr.write(`${line}\n`),
  );
  process.stdout.write(`${formatDiskBench(result)}\n`);
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  return result.baseline.sha256Match && result.wanmig.sha256Match ? 0 : 1;
}

async function benchMemory(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      ram: { type: 'string', default: '1GiB' },
      workload: { type: 'string', default: 'web' },
      delay: { type: 'string', default: '50ms' },
      bandwidth: { type: 'string', default: '200mbit' },
      downtime: { type: 'string', default: '300ms' },
      json: { type: 'boolean' },
    },
  });
  const workload = values.workload as 'idle' | 'web' | 'db' | 'write-heavy';
  if (!['idle', 'web', 'db', 'write-heavy'].includes(workload)) {
    throw new UsageError('--workload is idle, web, db or write-heavy');
  }
  const result = await runMemoryBench(
    {
      ramBytes: parseSize(values.ram, '--ram'),
      workload,
      delayMs: parseDuration(values.delay, '--delay'),
      bandwidthBps: parseBitRate(values.bandwidth, '--bandwidth'),
      downtimeMs: parseDuration(values.downtime, '--downtime'),
    },
    (line) => process.stderr.write(`${line}\n`),
  );
  process.stdout.write(`${formatMemoryBench(result)}\n`);
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  return result.plain.verified && result.wanmig.verified ? 0 : 1;
}

async function benchQemu(argv: string[]): Promise<number> {
  const d = DEFAULT_QEMU_BENCH_OPTIONS;
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      ram: { type: 'string', default: `${d.ramMiB}MiB` },
      delay: { type: 'string', default: `${d.delayMs}ms` },
      bandwidth: { type: 'string', default: `${d.bandwidthBps / 1e6}mbit` },
      warmup: { type: 'string', default: `${d.warmupMs}ms` },
      'no-verify': { type: 'boolean' },
      runs: { type: 'string', default: QEMU_BENCH_RUNS.join(',') },
      json: { type: 'boolean' },
    },
  });
  const runs = values.runs.split(',').map((name) => name.trim());
  const unknown = runs.filter((name) => !(QEMU_BENCH_RUNS as readonly string[]).includes(name));
  if (unknown.length > 0 || runs.length === 0) {
    throw new UsageError(`--runs takes a comma-separated subset of ${QEMU_BENCH_RUNS.join(',')}`);
  }
  const ramMiB = parseSize(values.ram, '--ram') / 2 ** 20;
  if (!Number.isInteger(ramMiB) || ramMiB < 128)
    throw new UsageError('--ram is a whole number of MiB, at least 128MiB');
  const result = await runQemuBench(
    {
      ramMiB,
      delayMs: parseDuration(values.delay, '--delay'),
      bandwidthBps: parseBitRate(values.bandwidth, '--bandwidth'),
      warmupMs: parseDuration(values.warmup, '--warmup'),
      noVerify: values['no-verify'],
      runs: runs as QemuBenchOptions['runs'],
    },
    (line) => process.stderr.write(`${line}\n`),
  );
  process.stdout.write(`${formatQemuBench(result)}\n`);
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  return nothingWrong(result) ? 0 : 1;
}

async function benchIntegrity(argv: string[]): Promise<number> {
  const d = DEFAULT_INTEGRITY_OPTIONS;
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      driver: { type: 'string', default: IntegrityDriver.Sim },
      runs: { type: 'string', default: String(d.runs) },
      burners: { type: 'string', default: String(d.burners) },
      ram: { type: 'string' },
      disk: { type: 'string', default: `${d.diskBytes / 2 ** 20}MiB` },
      delay: { type: 'string', default: `${d.delayMs}ms` },
      bandwidth: { type: 'string', default: `${d.bandwidthBps / 1e6}mbit` },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const driver = values.driver as IntegrityDriver;
  if (!Object.values(IntegrityDriver).includes(driver)) throw new UsageError('--driver is sim or qemu');
  const runs = Number(values.runs);
  const burners = Number(values.burners);
  if (!Number.isInteger(runs) || runs < 1 || runs > 1000)
    throw new UsageError('--runs is a whole number from 1 to 1000');
  if (!Number.isInteger(burners) || burners < 0 || burners > 64)
    throw new UsageError('--burners is a whole number from 0 to 64');
  // A QEMU guest needs room for its kernel and workload: 256 MiB unless told.
  const ramBytes = parseSize(
    values.ram ?? (driver === IntegrityDriver.Qemu ? '256MiB' : `${d.ramBytes / 2 ** 20}MiB`),
    '--ram',
  );
  const result = await runIntegrityBench(
    {
      driver,
      runs,
      burners,
      ramBytes,
      diskBytes: parseSize(values.disk, '--disk'),
      delayMs: parseDuration(values.delay, '--delay'),
      bandwidthBps: parseBitRate(values.bandwidth, '--bandwidth'),
    },
    (line) => process.stderr.write(`${line}\n`),
  );
  process.stdout.write(`${formatIntegrityBench(result)}\n`);
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  return integrityHolds(result) ? 0 : 1;
}

const out = (text: string) => process.stdout.write(`${text}\n`);

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'demo':
      return demo(rest, out);
    case 'up':
      return up(rest, out);
    case 'migrate':
      return migrate(rest, out);
    case 'status':
      return status(rest, out);
    case 'abort':
      return abort(rest, out);
    case 'events':
      return events(rest, out);
    case 'drill':
      return drill(rest, out);
    case 'disk':
      if (rest[0] === 'serve') return diskServe(rest.slice(1));
      if (rest[0] === 'migrate') return diskMigrate(rest.slice(1), (text) => process.stdout.write(`${text}\n`));
      throw new UsageError(`unknown disk command ${JSON.stringify(rest[0] ?? '')} (try: serve, migrate)`);
    case 'vm':
      if (rest[0] === 'create') return vmCreate(rest.slice(1), out);
      if (rest[0] === 'adopt') return vmAdopt(rest.slice(1), out);
      if (rest[0] === 'list' || rest[0] === 'ls') return vmList(rest.slice(1), out);
      if (rest[0] === 'rm') return vmRemove(rest.slice(1), out);
      if (rest[0] === 'migrate') return vmMigrate(rest.slice(1), out);
      if (rest[0] === '--help' || rest[0] === '-h' || rest[0] === 'help') {
        out(`usage:\n${INVENTORY_USAGE}\n\n${VM_USAGE}`);
        return 0;
      }
      throw new UsageError(
        `unknown vm command ${JSON.stringify(rest[0] ?? '')} (try: create, adopt, list, rm, migrate, --help)`,
      );
    case 'bench':
      if (rest[0] === 'stream') return (await benchStream(rest.slice(1))) ? 0 : 1;
      if (rest[0] === 'disk') return benchDisk(rest.slice(1));
      if (rest[0] === 'memory') return benchMemory(rest.slice(1));
      if (rest[0] === 'qemu') return benchQemu(rest.slice(1));
      if (rest[0] === 'integrity') return benchIntegrity(rest.slice(1));
      throw new UsageError(
        `unknown benchmark ${JSON.stringify(rest[0] ?? '')} (try: stream, disk, memory, qemu, integrity)`,
      );
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const usage =
      err instanceof UsageError ||
      err instanceof UnitError ||
      (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
    // One line: the message, and the code of an error from the API (NOT_FOUND, CONFLICT, ...).
    const code = err instanceof WanmigError ? ` (${err.code})` : '';
    process.stderr.write(`wanmig: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}${code}\n`);
    process.exitCode = usage ? 2 : 1;
  },
);

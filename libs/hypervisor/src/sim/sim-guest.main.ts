/**
 * The sim guest process: `node sim-guest.main.js --vm-id ID --ram-file PATH --ram SIZE --runtime-dir DIR
 * (--workload idle|web|db|write-heavy --seed N | --incoming) [--disk NBD-URI] [--service-port N]
 * [--parent-pid PID] [--page-cache SIZE]`. Prints one ready line on stdout (GUEST_READY_PREFIX + JSON),
 * logs on stderr, exits 0 when released or on SIGTERM, 2 on bad options, 1 when it cannot start.
 */
import { GuestConfigError } from '../errors.js';
import { parseGuestArgs, type ParsedGuestOptions } from './guest.options.js';
import { isProcessAlive } from './runtime.paths.js';
import { GUEST_READY_PREFIX } from './sim.constants.js';
import { SimGuest } from './sim.guest.js';

const PARENT_CHECK_MS = 500;

function logger(vmId: string): (line: string) => void {
  return (line) => process.stderr.write(`${new Date().toISOString()} [sim-guest ${vmId} ${process.pid}] ${line}\n`);
}

async function main(): Promise<void> {
  let options: ParsedGuestOptions;
  try {
    options = parseGuestArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err instanceof GuestConfigError ? err.message : String(err)}\n`);
    process.exit(2);
  }
  const log = logger(options.vmId);
  // Once the launcher has read the ready line it may close our stdout: never die of EPIPE.
  process.stdout.on('error', () => undefined);
  let guest: SimGuest;
  try {
    guest = await SimGuest.boot(options, log, (code) => process.exit(code));
  } catch (err) {
    log(`cannot start: ${describeChain(err)}\n${(err as Error).stack ?? ''}`);
    process.exit(1);
  }
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => void guest.shutdown(signal, 0));
  }
  const parentPid = options.parentPid;
  if (parentPid !== undefined) {
    setInterval(() => {
      if (!isProcessAlive(parentPid)) void guest.shutdown(`launcher ${parentPid} exited`, 0);
    }, PARENT_CHECK_MS).unref();
  }
  process.stdout.write(`${GUEST_READY_PREFIX}${JSON.stringify(guest.runtimeInfo)}\n`);
}

/** "message: cause message: its cause message", for one readable log line. */
function describeChain(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e !== undefined && e !== null && parts.length < 5; e = (e as { cause?: unknown }).cause) {
    parts.push(e instanceof Error ? e.message : JSON.stringify(e));
  }
  return parts.join(': ');
}

void main();

import { ipCommand } from './ip.commands.js';
import { newBedPrefix } from './net-bed.plan.js';
import { runIp } from './netns.runner.js';

export type NetAvailability = { ok: true } | { ok: false; reason: string };

const PROBE_TIMEOUT_MS = 5_000;
let probed: Promise<NetAvailability> | undefined;

/**
 * Whether this machine lets the tests build a NetBed: Linux, root, `ip` installed, and a throwaway namespace with a
 * veth pair can be created and deleted. Probed once per process.
 */
export function netAvailable(): Promise<NetAvailability> {
  probed ??= probe();
  return probed;
}

/** The line a skipped suite prints: "network namespaces not allowed here: <reason>". */
export function netUnavailableMessage(availability: NetAvailability): string | undefined {
  return availability.ok ? undefined : `network namespaces not allowed here: ${availability.reason}`;
}

async function probe(): Promise<NetAvailability> {
  if (process.platform !== 'linux') return { ok: false, reason: `${process.platform} is not Linux` };
  const uid = process.getuid?.();
  if (uid !== 0) return { ok: false, reason: `not root (uid ${uid})` };
  try {
    await runIp(['-V'], { timeoutMs: PROBE_TIMEOUT_MS });
  } catch (err) {
    return { ok: false, reason: `\`ip\` (iproute2) does not run: ${(err as Error).message}` };
  }
  const netns = `${newBedPrefix()}-p`;
  try {
    await runIp(ipCommand.addNamespace(netns), { timeoutMs: PROBE_TIMEOUT_MS });
  } catch (err) {
    return { ok: false, reason: `cannot create a network namespace: ${(err as Error).message}` };
  }
  let verdict: NetAvailability = { ok: true };
  try {
    await runIp(ipCommand.addVethPair(netns, 'probe0', netns, 'probe1'), { timeoutMs: PROBE_TIMEOUT_MS });
  } catch (err) {
    verdict = { ok: false, reason: `cannot create a veth pair in a namespace: ${(err as Error).message}` };
  }
  try {
    await runIp(ipCommand.deleteNamespace(netns), { timeoutMs: PROBE_TIMEOUT_MS });
  } catch (err) {
    if (verdict.ok) verdict = { ok: false, reason: `cannot delete a network namespace: ${(err as Error).message}` };
  }
  return verdict;
}

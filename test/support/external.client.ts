/**
 * The orchestrator's NATS API as existing infrastructure calls it: a plain @nats-io connection, plain JSON in, the
 * documented `{response}` / `{err}` reply out. Deliberately uses none of wanmig's own classes.
 */
import type { NatsConnection } from '@nats-io/nats-core';

export type ApiReply<T> = { ok: true; value: T } | { ok: false; code: string; message: string };

export async function apiCall<T>(
  nc: NatsConnection,
  site: string,
  verb: string,
  body: unknown,
  timeoutMs = 30_000,
): Promise<ApiReply<T>> {
  const msg = await nc.request(`wanmig.v1.${site}.orchestrator.${verb}`, JSON.stringify(body), { timeout: timeoutMs });
  const reply = msg.json<{ response?: T; err?: { code: string; message: string } }>();
  if (reply.err) return { ok: false, code: reply.err.code, message: reply.err.message };
  return { ok: true, value: reply.response as T };
}

/** The call must succeed: its value, or a failed expectation naming the error. */
export async function apiOk<T>(
  nc: NatsConnection,
  site: string,
  verb: string,
  body: unknown,
  timeoutMs?: number,
): Promise<T> {
  const reply = await apiCall<T>(nc, site, verb, body, timeoutMs);
  if (!reply.ok) throw new Error(`${verb} at ${site} failed: ${reply.code}: ${reply.message}`);
  return reply.value;
}

export interface MigrationLike {
  id: string;
  vmId: string;
  phase: string;
  history: Array<{ phase: string; at: string; note?: string }>;
  error?: { code: string; message: string };
  figures?: Record<string, unknown>;
}

/** Polls migration.get until `until` holds (bounded). */
export async function waitMigration(
  nc: NatsConnection,
  site: string,
  migrationId: string,
  until: (m: MigrationLike) => boolean,
  timeoutMs = 120_000,
  pollMs = 100,
): Promise<MigrationLike> {
  const deadline = Date.now() + timeoutMs;
  let last: MigrationLike | undefined;
  while (Date.now() < deadline) {
    last = await apiOk<MigrationLike>(nc, site, 'migration.get', { migrationId });
    if (until(last)) return last;
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
  throw new Error(`migration ${migrationId} did not get there within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
}

export const isFinished = (m: MigrationLike): boolean => m.phase === 'COMMITTED' || m.phase === 'ROLLED_BACK';

/** A VM as the API shows it, the fields tests read. */
export interface VmLike {
  vmId: string;
  site: string;
  driver?: string;
  state: string;
  serviceAddress: string;
  migrationId?: string;
  ramBytes: number;
  diskBytes: number;
  diskPath: string;
  createdAt: string;
}

/** The port of a `host:port` service address (a QEMU VM's forwarded port). */
export function portOf(address: string): number {
  return Number(address.split(':').pop());
}

/** Orchestrator environment for QEMU VMs under TCG (this host's KVM does not run guests: no probe). */
export const QEMU_TCG_ENV = { WANMIG_QEMU_ACCEL: 'tcg' };

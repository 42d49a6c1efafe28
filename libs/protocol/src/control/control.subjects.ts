/**
 * Control subjects are addressed to a site and a service, so the same NATS namespace can carry
 * both sites' services: `wanmig.v1.<site>.<service>.<verb>`.
 */
import { SUBJECT_ROOT } from '../subjects.js';

export const ServiceName = {
  DeltaApply: 'delta-apply',
  DiskTransfer: 'disk-transfer',
  MemoryPrecopy: 'memory-precopy',
  Orchestrator: 'orchestrator',
  NetRedirect: 'net-redirect',
} as const;
export type ServiceName = (typeof ServiceName)[keyof typeof ServiceName];

/** A site name: lower-case letters, digits and dashes (one NATS subject token). */
export const SITE_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

export function checkSite(site: string): string {
  if (!SITE_PATTERN.test(site))
    throw new TypeError(`site must be lower-case letters, digits and dashes, got ${JSON.stringify(site)}`);
  return site;
}

export function controlSubject(site: string, service: ServiceName, verb: string): string {
  return `${SUBJECT_ROOT}.${checkSite(site)}.${service}.${verb}`;
}

export const DiskVerb = {
  /** delta-apply: create (or reopen, to resume) the destination image and start receiving. */
  Prepare: 'disk.prepare',
  /** delta-apply: where the destination stands (watermark, present blocks). */
  Status: 'disk.status',
  /** delta-apply: sha256 digests of the destination image, per region or per block. */
  Digest: 'disk.digest',
  /** delta-apply: stop receiving and forget the migration (optionally deleting the image). */
  Release: 'disk.release',
  /** delta-apply: the present map (blocks durable at least once), for a restarted sender to resume from. */
  Present: 'disk.present',
} as const;
export type DiskVerb = (typeof DiskVerb)[keyof typeof DiskVerb];

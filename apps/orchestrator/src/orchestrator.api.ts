import type {
  CloudEvent,
  ListMigrationsReply,
  ListSitesReply,
  ListVmsReply,
  MigrationView,
  SiteInfo,
  VmView,
} from '@wanmig/protocol';

/**
 * What the orchestrator offers, whatever carries it (NATS request/reply, HTTP). Every method takes the raw request
 * body and validates it itself (validateDto: unknown keys refused), so both transports share one set of checks and
 * one set of typed errors (WanmigError with an ErrorCode).
 */
export interface OrchestratorApi {
  /** CreateMigrationRequest → the new record (PLANNED, pre-flight checks passed). */
  createMigration(body: unknown): Promise<MigrationView>;
  /** MigrationRef { migrationId } */
  getMigration(body: unknown): Promise<MigrationView>;
  /** ListMigrationsRequest */
  listMigrations(body: unknown): Promise<ListMigrationsReply>;
  /** MigrationRef { migrationId } */
  abortMigration(body: unknown): Promise<MigrationView>;
  /** MigrationRef { migrationId }: every stored event of the migration, oldest first. */
  migrationEvents(body: unknown): Promise<CloudEvent[]>;
  /** CreateVmRequest */
  createVm(body: unknown): Promise<VmView>;
  /** ImportVmRequest: a running QEMU, by its QMP socket, becomes a VM of this site. */
  importVm(body: unknown): Promise<VmView>;
  /** VmRef */
  getVm(body: unknown): Promise<VmView>;
  listVms(body: unknown): Promise<ListVmsReply>;
  /** VmRef: stops the guest and deletes its disk. */
  removeVm(body: unknown): Promise<{ vmId: string }>;
  siteInfo(body: unknown): Promise<SiteInfo>;
  listSites(body: unknown): Promise<ListSitesReply>;
}

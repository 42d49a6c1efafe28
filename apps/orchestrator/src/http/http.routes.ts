/**
 * The HTTP API's routes: one per OrchestratorApi method, plus the OpenAPI document. The router serves this table and
 * openapi.ts documents it, so a route cannot exist without its operation.
 */
import { type ApiSchemaName } from '@wanmig/protocol';
import { type OrchestratorApi } from '../orchestrator.api.js';

export const HTTP_METHODS = ['GET', 'POST', 'DELETE'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

/** The OpenAPI document's own route (served by the HTTP layer, not by the API). */
export const OPENAPI_OPERATION = 'getOpenApi';
export const OPENAPI_PATH = '/openapi.json';

export type HttpOperation = keyof OrchestratorApi | typeof OPENAPI_OPERATION;

export interface HttpRoute {
  method: HttpMethod;
  /** Path template; a `{name}` segment is a path parameter, handed to the API as the body key `name`. */
  path: string;
  /** The OrchestratorApi method that serves it; also the OpenAPI operationId. */
  operation: HttpOperation;
  tag: 'migrations' | 'vms' | 'sites' | 'meta';
  summary: string;
  /**
   * The DTO the API validates the request as, and where its keys come from: a JSON body, the query string, or the
   * path. Keys from the path and the query are merged into the body. No request: the route takes no parameters.
   */
  request?: { schema: ApiSchemaName; in: 'body' | 'query' | 'path' };
  /** Success status and the reply's schema (an array of it with `replyArray`). */
  status: 200 | 201;
  reply?: ApiSchemaName;
  replyArray?: boolean;
  /** `Location` of what a 201 created, from the reply. */
  location?: (reply: unknown) => string | undefined;
  /** Error statuses the operation answers besides 500 (documented in the OpenAPI document). */
  errors: readonly number[];
}

function locationOf(prefix: string, key: string): (reply: unknown) => string | undefined {
  return (reply) => {
    const value = (reply as Record<string, unknown> | null)?.[key];
    return typeof value === 'string' ? `${prefix}/${encodeURIComponent(value)}` : undefined;
  };
}

export const HTTP_ROUTES: readonly HttpRoute[] = [
  {
    method: 'POST',
    path: '/v1/migrations',
    operation: 'createMigration',
    tag: 'migrations',
    summary: 'Start migrating a VM of this site to another site',
    request: { schema: 'CreateMigrationRequest', in: 'body' },
    status: 201,
    reply: 'MigrationView',
    location: locationOf('/v1/migrations', 'id'),
    errors: [400, 404, 409, 413, 415, 503, 507],
  },
  {
    method: 'GET',
    path: '/v1/migrations',
    operation: 'listMigrations',
    tag: 'migrations',
    summary: 'List the migrations this site drives',
    request: { schema: 'ListMigrationsRequest', in: 'query' },
    status: 200,
    reply: 'ListMigrationsReply',
    errors: [400, 503],
  },
  {
    method: 'GET',
    path: '/v1/migrations/{migrationId}',
    operation: 'getMigration',
    tag: 'migrations',
    summary: 'Get one migration',
    request: { schema: 'MigrationRef', in: 'path' },
    status: 200,
    reply: 'MigrationView',
    errors: [400, 404, 503],
  },
  {
    method: 'POST',
    path: '/v1/migrations/{migrationId}/abort',
    operation: 'abortMigration',
    tag: 'migrations',
    summary: 'Abort a migration (roll it back; refused once it is past ACTIVATE)',
    request: { schema: 'MigrationRef', in: 'path' },
    status: 200,
    reply: 'MigrationView',
    errors: [400, 404, 409, 413, 415, 503],
  },
  {
    method: 'GET',
    path: '/v1/migrations/{migrationId}/events',
    operation: 'migrationEvents',
    tag: 'migrations',
    summary: 'Every stored event of a migration (CloudEvents), oldest first',
    request: { schema: 'MigrationRef', in: 'path' },
    status: 200,
    reply: 'CloudEvent',
    replyArray: true,
    errors: [400, 404, 503],
  },
  {
    method: 'GET',
    path: '/v1/vms',
    operation: 'listVms',
    tag: 'vms',
    summary: 'List the VMs that run at this site',
    status: 200,
    reply: 'ListVmsReply',
    errors: [400, 503],
  },
  {
    method: 'POST',
    path: '/v1/vms',
    operation: 'createVm',
    tag: 'vms',
    summary: 'Create and start a (simulated) VM at this site',
    request: { schema: 'CreateVmRequest', in: 'body' },
    status: 201,
    reply: 'VmView',
    location: locationOf('/v1/vms', 'vmId'),
    errors: [400, 409, 413, 415, 503, 507],
  },
  {
    method: 'POST',
    path: '/v1/vms/import',
    operation: 'importVm',
    tag: 'vms',
    summary: 'Take over a QEMU running at this site as a VM, by its QMP socket',
    request: { schema: 'ImportVmRequest', in: 'body' },
    status: 201,
    reply: 'VmView',
    location: locationOf('/v1/vms', 'vmId'),
    errors: [400, 404, 409, 413, 415, 503],
  },
  {
    method: 'GET',
    path: '/v1/vms/{vmId}',
    operation: 'getVm',
    tag: 'vms',
    summary: 'Get one VM of this site',
    request: { schema: 'VmRef', in: 'path' },
    status: 200,
    reply: 'VmView',
    errors: [400, 404, 503],
  },
  {
    method: 'DELETE',
    path: '/v1/vms/{vmId}',
    operation: 'removeVm',
    tag: 'vms',
    summary: 'Stop a VM and delete its disk',
    request: { schema: 'VmRef', in: 'path' },
    status: 200,
    reply: 'RemoveVmReply',
    errors: [400, 404, 409, 503],
  },
  {
    method: 'GET',
    path: '/v1/site',
    operation: 'siteInfo',
    tag: 'sites',
    summary: 'This site: name, free room, VM and migration counts',
    status: 200,
    reply: 'SiteInfo',
    errors: [400, 503],
  },
  {
    method: 'GET',
    path: '/v1/sites',
    operation: 'listSites',
    tag: 'sites',
    summary: 'This site and its peers, each with whether it answered',
    status: 200,
    reply: 'ListSitesReply',
    errors: [400, 503],
  },
  {
    method: 'GET',
    path: OPENAPI_PATH,
    operation: OPENAPI_OPERATION,
    tag: 'meta',
    summary: 'This API as an OpenAPI 3.1 document',
    status: 200,
    errors: [400],
  },
];

import { API_SCHEMAS } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { type OrchestratorApi } from '../orchestrator.api.js';
import { HTTP_ROUTES, OPENAPI_OPERATION } from './http.routes.js';
import { buildOpenApiDocument, type OpenApiDocument } from './openapi.js';
import { DocumentedReplies } from './openapi.spec-helper.js';

/** Every OrchestratorApi method, listed so the compiler notices a new one. */
const API_OPERATIONS: Record<keyof OrchestratorApi, true> = {
  createMigration: true,
  getMigration: true,
  listMigrations: true,
  abortMigration: true,
  migrationEvents: true,
  createVm: true,
  importVm: true,
  getVm: true,
  listVms: true,
  removeVm: true,
  siteInfo: true,
  listSites: true,
};

function refs(value: unknown, found: string[] = []): string[] {
  if (Array.isArray(value)) for (const item of value) refs(item, found);
  else if (value !== null && typeof value === 'object') {
    for (const [key, child] of Object.entries(value)) {
      if (key === '$ref' && typeof child === 'string') found.push(child);
      else refs(child, found);
    }
  }
  return found;
}

function resolvePointer(doc: OpenApiDocument, ref: string): unknown {
  expect(ref.startsWith('#/'), ref).toBe(true);
  return ref
    .slice(2)
    .split('/')
    .map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'))
    .reduce<unknown>((node, token) => (node as Record<string, unknown> | undefined)?.[token], doc);
}

describe('buildOpenApiDocument', () => {
  const doc = buildOpenApiDocument({ site: 'site-a', serverUrl: 'http://127.0.0.1:8080' });

  it('has an operation for every route, and a route for every operation', () => {
    for (const route of HTTP_ROUTES) {
      const operation = doc.paths[route.path]?.[route.method.toLowerCase() as 'get'];
      expect(operation?.operationId, `${route.method} ${route.path}`).toBe(route.operation);
      expect(operation?.responses[String(route.status)]).toBeDefined();
      expect(operation?.responses['500']).toBeDefined();
    }
    const operations = Object.values(doc.paths).flatMap((methods) => Object.values(methods));
    expect(operations).toHaveLength(HTTP_ROUTES.length);
    expect(new Set(operations.map((op) => op.operationId)).size).toBe(operations.length);
  });

  it('serves every OrchestratorApi method, and the document itself', () => {
    expect(HTTP_ROUTES.map((route) => route.operation).sort()).toEqual(
      [...Object.keys(API_OPERATIONS), OPENAPI_OPERATION].sort(),
    );
  });

  it('resolves every $ref', () => {
    const all = refs(doc);
    expect(all.length).toBeGreaterThan(20);
    for (const ref of new Set(all)) expect(resolvePointer(doc, ref), ref).toBeDefined();
  });

  it('declares every path parameter, typed as the request DTO types it', () => {
    for (const [path, methods] of Object.entries(doc.paths)) {
      const names = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      for (const operation of Object.values(methods)) {
        const declared = (operation.parameters ?? []).filter((p) => p.in === 'path');
        expect(declared.map((p) => p.name)).toEqual(names);
        for (const p of declared) expect(p.required).toBe(true);
      }
    }
    const getVm = doc.paths['/v1/vms/{vmId}']?.get;
    expect(getVm?.parameters?.[0].schema).toEqual({ type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' });
  });

  it('documents the query of list migrations without null, and the request bodies by reference', () => {
    const list = doc.paths['/v1/migrations']?.get;
    expect(
      list?.parameters?.map(({ name, in: where, required, schema }) => ({ name, where, required, schema })),
    ).toEqual([
      { name: 'unfinished', where: 'query', required: false, schema: { type: 'boolean' } },
      { name: 'vmId', where: 'query', required: false, schema: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' } },
    ]);
    expect(doc.paths['/v1/migrations']?.post?.requestBody).toEqual({
      required: true,
      content: { 'application/json': { schema: { $ref: '#/components/schemas/CreateMigrationRequest' } } },
    });
  });

  it('takes its components from API_SCHEMAS, under one dialect', () => {
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.jsonSchemaDialect).toBe('https://json-schema.org/draft/2020-12/schema');
    for (const name of Object.keys(API_SCHEMAS) as (keyof typeof API_SCHEMAS)[]) {
      const { $schema: _dialect, ...schema } = API_SCHEMAS[name];
      expect(doc.components.schemas[name]).toEqual(schema);
    }
    expect(doc.servers).toEqual([{ url: 'http://127.0.0.1:8080', description: 'site-a' }]);
    expect(doc.info.title).toContain('site-a');
  });

  it('compiles every documented response schema', () => {
    const replies = new DocumentedReplies(doc);
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(methods)) {
        for (const status of Object.keys(operation.responses)) {
          expect(() => replies.validator(method, path, Number(status)), `${method} ${path} ${status}`).not.toThrow();
        }
      }
    }
    const error = replies.validator('GET', '/v1/vms/{vmId}', 404);
    expect(error({ error: { code: 'NOT_FOUND', message: 'no VM x' } })).toBe(true);
    expect(error({ code: 'NOT_FOUND', message: 'no VM x' })).toBe(false);
  });

  it('is a pure function of its options', () => {
    expect(buildOpenApiDocument({ site: 'site-a', serverUrl: 'http://127.0.0.1:8080' })).toEqual(doc);
    expect(buildOpenApiDocument({ site: 'site-b' }).servers).toBeUndefined();
    expect(() => buildOpenApiDocument({ site: 'x', routes: [{ ...HTTP_ROUTES[0], errors: [418] }] })).toThrow(
      /no error response for status 418/,
    );
  });
});

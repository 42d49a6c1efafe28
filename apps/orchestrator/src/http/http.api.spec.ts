import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { ErrorCode, WanmigError } from '@wanmig/protocol';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startHttpApi, type HttpApiServer } from './http.api.js';
import { FakeOrchestratorApi } from './fake-orchestrator.spec-helper.js';
import { type OpenApiDocument } from './openapi.js';
import { DocumentedReplies } from './openapi.spec-helper.js';

const MIB = 1024 * 1024;

describe('startHttpApi', () => {
  const api = new FakeOrchestratorApi();
  const logged: string[] = [];
  let server: HttpApiServer;
  let replies: DocumentedReplies;

  /** A request, its status, headers and JSON body; the body is checked against what the OpenAPI document says. */
  async function call(
    method: string,
    path: string,
    init: { json?: unknown; body?: string | Uint8Array; contentType?: string; documented?: string } = {},
  ): Promise<{ status: number; headers: Headers; body: unknown }> {
    const headers: Record<string, string> = {};
    let body = init.body;
    if (init.json !== undefined) {
      body = JSON.stringify(init.json);
      headers['content-type'] = 'application/json';
    }
    if (init.contentType !== undefined) headers['content-type'] = init.contentType;
    const res = await fetch(`${server.url}${path}`, { method, headers, body });
    const text = await res.text();
    const parsed: unknown = text === '' ? undefined : JSON.parse(text);
    if (init.documented !== undefined) {
      const validate = replies.validator(method, init.documented, res.status);
      expect(validate(parsed), `${method} ${path} ${res.status}: ${JSON.stringify(validate.errors)}`).toBe(true);
    }
    return { status: res.status, headers: res.headers, body: parsed };
  }

  beforeAll(async () => {
    server = await startHttpApi(api, {
      port: 0,
      site: 'site-a',
      logger: { error: (message) => logged.push(message) },
    });
    const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as OpenApiDocument;
    replies = new DocumentedReplies(doc);
  });

  afterAll(async () => {
    await server.close();
  });

  afterEach(() => {
    api.failNext = undefined;
  });

  describe('migrations', () => {
    it('creates one: 201, its Location, defaults filled in by the API', async () => {
      api.addVm('vm-1');
      const res = await call('POST', '/v1/migrations', {
        json: { vmId: 'vm-1', toSite: 'site-b' },
        documented: '/v1/migrations',
      });
      expect(res.status).toBe(201);
      const migration = res.body as { id: string; options: unknown; phase: string };
      expect(migration.phase).toBe('PLANNED');
      expect(migration.options).toEqual({ downtimeMs: 300, policy: 'smart', verify: true });
      expect(res.headers.get('location')).toBe(`/v1/migrations/${migration.id}`);
      expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    });

    it('passes validateDto’s errors through as 400 INVALID_REQUEST, naming every bad key', async () => {
      const res = await call('POST', '/v1/migrations', {
        json: { vmId: 'a b', toSite: 'Site B', downtimeMs: 0, x: 1 },
        documented: '/v1/migrations',
      });
      expect(res.status).toBe(400);
      const { error } = res.body as { error: { code: string; message: string } };
      expect(error.code).toBe('INVALID_REQUEST');
      for (const key of ['vmId', 'toSite', 'downtimeMs', 'property x should not exist']) {
        expect(error.message).toContain(key);
      }
    });

    it('maps the API’s errors: NOT_FOUND 404, CONFLICT 409', async () => {
      const unknownVm = await call('POST', '/v1/migrations', {
        json: { vmId: 'vm-nope', toSite: 'site-b' },
        documented: '/v1/migrations',
      });
      expect(unknownVm).toMatchObject({
        status: 404,
        body: { error: { code: 'NOT_FOUND', message: 'no VM vm-nope at site-a' } },
      });
      const again = await call('POST', '/v1/migrations', {
        json: { vmId: 'vm-1', toSite: 'site-b' },
        documented: '/v1/migrations',
      });
      expect(again).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT' } } });
    });

    it('turns the query into the request: unfinished=true is a boolean', async () => {
      api.addMigration({ vmId: 'vm-q', phase: 'COMMITTED' });
      const running = api.addMigration({ vmId: 'vm-q', phase: 'DISK_BULK' });
      const res = await call('GET', '/v1/migrations?unfinished=true&vmId=vm-q', { documented: '/v1/migrations' });
      expect(res.status).toBe(200);
      expect(api.calls.at(-1)).toEqual({ operation: 'listMigrations', body: { unfinished: true, vmId: 'vm-q' } });
      expect(res.body).toEqual({ migrations: [running] });
      const all = await call('GET', '/v1/migrations?vmId=vm-q&unfinished=false', { documented: '/v1/migrations' });
      expect((all.body as { migrations: unknown[] }).migrations).toHaveLength(2);
    });

    it('refuses query values and keys the request does not take', async () => {
      const bad = await call('GET', '/v1/migrations?unfinished=yes', { documented: '/v1/migrations' });
      expect(bad.status).toBe(400);
      expect((bad.body as { error: { message: string } }).error.message).toContain('unfinished');
      const unknown = await call('GET', '/v1/migrations?phase=PLANNED', { documented: '/v1/migrations' });
      expect(unknown.status).toBe(400);
      expect((unknown.body as { error: { message: string } }).error.message).toContain(
        'property phase should not exist',
      );
    });

    it('gets one by the id in the path; 404 when unknown, 400 when no UUID', async () => {
      const migration = api.addMigration({ vmId: 'vm-g', phase: 'MEM_PRECOPY' });
      const path = '/v1/migrations/{migrationId}';
      const res = await call('GET', `/v1/migrations/${migration.id}`, { documented: path });
      expect(res).toMatchObject({ status: 200, body: migration });
      expect(api.calls.at(-1)).toEqual({ operation: 'getMigration', body: { migrationId: migration.id } });
      expect((await call('GET', `/v1/migrations/${randomUUID()}`, { documented: path })).status).toBe(404);
      const notUuid = await call('GET', '/v1/migrations/not-a-uuid', { documented: path });
      expect(notUuid.status).toBe(400);
      expect((notUuid.body as { error: { message: string } }).error.message).toContain('migrationId must be a UUID');
    });

    it('aborts one (an empty or `{}` body both do); 409 once it is finished', async () => {
      const path = '/v1/migrations/{migrationId}/abort';
      const migration = api.addMigration({ vmId: 'vm-a', phase: 'DISK_BULK' });
      const res = await call('POST', `/v1/migrations/${migration.id}/abort`, { documented: path });
      expect(res).toMatchObject({ status: 200, body: { id: migration.id, phase: 'ROLLING_BACK' } });
      const other = api.addMigration({ vmId: 'vm-b', phase: 'DISK_BULK' });
      expect((await call('POST', `/v1/migrations/${other.id}/abort`, { json: {}, documented: path })).status).toBe(200);
      const done = api.addMigration({ vmId: 'vm-c', phase: 'COMMITTED' });
      const refused = await call('POST', `/v1/migrations/${done.id}/abort`, { documented: path });
      expect(refused).toMatchObject({ status: 409, body: { error: { code: 'CONFLICT' } } });
    });

    it('refuses a body that names another migration than the path, or adds keys', async () => {
      const migration = api.addMigration({ vmId: 'vm-d', phase: 'DISK_BULK' });
      const path = `/v1/migrations/${migration.id}/abort`;
      const clash = await call('POST', path, { json: { migrationId: randomUUID() } });
      expect(clash.status).toBe(400);
      expect((clash.body as { error: { message: string } }).error.message).toContain('migrationId given both');
      const extra = await call('POST', path, { json: { reason: 'why not' } });
      expect(extra.status).toBe(400);
      expect((extra.body as { error: { message: string } }).error.message).toContain(
        'property reason should not exist',
      );
    });

    it('lists its events as CloudEvents', async () => {
      const migration = api.addMigration({ vmId: 'vm-e' });
      const res = await call('GET', `/v1/migrations/${migration.id}/events`, {
        documented: '/v1/migrations/{migrationId}/events',
      });
      expect(res.status).toBe(200);
      expect(res.body).toEqual([expect.objectContaining({ specversion: '1.0', subject: migration.id })]);
    });
  });

  describe('VMs and sites', () => {
    it('creates, gets, lists and removes a VM', async () => {
      const created = await call('POST', '/v1/vms', {
        json: { vmId: 'vm-new', workload: 'db' },
        documented: '/v1/vms',
      });
      expect(created).toMatchObject({ status: 201, body: { vmId: 'vm-new', workload: 'db', ramBytes: 256 * MIB } });
      expect(created.headers.get('location')).toBe('/v1/vms/vm-new');
      const got = await call('GET', '/v1/vms/vm-new', { documented: '/v1/vms/{vmId}' });
      expect(got).toMatchObject({ status: 200, body: { vmId: 'vm-new' } });
      const list = await call('GET', '/v1/vms', { documented: '/v1/vms' });
      expect((list.body as { vms: { vmId: string }[] }).vms.map((vm) => vm.vmId)).toContain('vm-new');
      const removed = await call('DELETE', '/v1/vms/vm-new', { documented: '/v1/vms/{vmId}' });
      expect(removed).toEqual(expect.objectContaining({ status: 200, body: { vmId: 'vm-new' } }));
      expect((await call('GET', '/v1/vms/vm-new', { documented: '/v1/vms/{vmId}' })).status).toBe(404);
      expect((await call('DELETE', '/v1/vms/vm-new', { documented: '/v1/vms/{vmId}' })).status).toBe(404);
    });

    it('imports a running QEMU at POST /v1/vms/import: 201 and its Location, 400 without a QMP socket', async () => {
      const body = { vmId: 'vm-qemu', qmpSocket: '/run/qemu/vm-qemu.qmp', diskNode: 'disk0' };
      const imported = await call('POST', '/v1/vms/import', { json: body, documented: '/v1/vms/import' });
      expect(imported).toMatchObject({ status: 201, body: { vmId: 'vm-qemu', driver: 'qemu' } });
      expect(imported.headers.get('location')).toBe('/v1/vms/vm-qemu');
      expect(api.calls.at(-1)).toEqual({ operation: 'importVm', body });
      const again = await call('POST', '/v1/vms/import', { json: body, documented: '/v1/vms/import' });
      expect(again.status).toBe(409);
      const relative = await call('POST', '/v1/vms/import', {
        json: { ...body, vmId: 'vm-rel', qmpSocket: 'vm.qmp' },
        documented: '/v1/vms/import',
      });
      expect(relative).toMatchObject({ status: 400, body: { error: { code: 'INVALID_REQUEST' } } });
      expect((relative.body as { error: { message: string } }).error.message).toMatch(/qmpSocket must be an absolute/);
    });

    it('answers 409 for a VM that exists and 507 when the site has no room', async () => {
      api.addVm('vm-exists');
      const exists = await call('POST', '/v1/vms', { json: { vmId: 'vm-exists' }, documented: '/v1/vms' });
      expect(exists.status).toBe(409);
      const huge = await call('POST', '/v1/vms', {
        json: { vmId: 'vm-huge', diskBytes: 1024 * 1024 * MIB },
        documented: '/v1/vms',
      });
      expect(huge).toMatchObject({ status: 507, body: { error: { code: 'NO_SPACE' } } });
    });

    it('decodes the path: a percent-encoded space reaches validation as a space', async () => {
      const res = await call('GET', '/v1/vms/vm%201', { documented: '/v1/vms/{vmId}' });
      expect(res.status).toBe(400);
      expect(api.calls.at(-1)).toEqual({ operation: 'getVm', body: { vmId: 'vm 1' } });
      expect((await call('GET', '/v1/vms/%E0%A4%A', { documented: '/v1/vms/{vmId}' })).status).toBe(400);
    });

    it('tells the site and its peers', async () => {
      const site = await call('GET', '/v1/site', { documented: '/v1/site' });
      expect(site).toMatchObject({ status: 200, body: { site: 'site-a' } });
      const sites = await call('GET', '/v1/sites', { documented: '/v1/sites' });
      expect((sites.body as { sites: { reachable: boolean }[] }).sites.map((s) => s.reachable)).toEqual([true, false]);
      expect(api.calls.at(-1)).toEqual({ operation: 'listSites', body: {} });
    });

    it('refuses parameters on a route that takes none', async () => {
      const res = await call('GET', '/v1/site?verbose=true', { documented: '/v1/site' });
      expect(res.status).toBe(400);
      expect((res.body as { error: { message: string } }).error.message).toBe(
        'GET /v1/site takes no parameters (got verbose)',
      );
    });
  });

  describe('errors', () => {
    it('maps UNAVAILABLE to 503 and a code without a status of its own to 500, message kept', async () => {
      api.failNext = new WanmigError(ErrorCode.Unavailable, 'site-b does not answer');
      expect(await call('GET', '/v1/sites', { documented: '/v1/sites' })).toMatchObject({
        status: 503,
        body: { error: { code: 'UNAVAILABLE', message: 'site-b does not answer' } },
      });
      api.failNext = new WanmigError(ErrorCode.StreamTimeout, 'disk stream stalled');
      expect(await call('GET', '/v1/vms', { documented: '/v1/vms' })).toMatchObject({
        status: 500,
        body: { error: { code: 'STREAM_TIMEOUT', message: 'disk stream stalled' } },
      });
    });

    it('answers an unexpected error as 500 INTERNAL without its detail, which goes to the log', async () => {
      api.failNext = new Error('secret detail in /etc/wanmig/key');
      const res = await call('GET', '/v1/vms', { documented: '/v1/vms' });
      expect(res).toEqual(
        expect.objectContaining({
          status: 500,
          body: { error: { code: 'INTERNAL', message: 'internal error (see the service log)', retryable: false } },
        }),
      );
      expect(JSON.stringify(res.body)).not.toContain('secret');
      expect(logged.at(-1)).toContain('GET /v1/vms failed: Error: secret detail in /etc/wanmig/key');
      expect(logged.at(-1)).toContain('http.api.spec.ts'); // the stack, in the log only
    });

    it('answers 404 for an unknown route and 405 with Allow for a wrong method', async () => {
      expect(await call('GET', '/v2/migrations')).toMatchObject({
        status: 404,
        body: { error: { code: 'NOT_FOUND', message: 'no route /v2/migrations' } },
      });
      expect((await call('GET', '/v1/migrations/x/y/z')).status).toBe(404);
      const wrong = await call('PUT', '/v1/migrations');
      expect(wrong).toMatchObject({ status: 405, body: { error: { code: 'INVALID_REQUEST' } } });
      expect(wrong.headers.get('allow')).toBe('GET, HEAD, POST');
      expect((await call('PATCH', `/v1/vms/vm-1`)).headers.get('allow')).toBe('DELETE, GET, HEAD');
    });

    it('answers 400 for malformed JSON or a body that is no object, 415 for a body that is not JSON', async () => {
      const malformed = await call('POST', '/v1/vms', { body: '{"vmId": ', contentType: 'application/json' });
      expect(malformed.status).toBe(400);
      expect((malformed.body as { error: { message: string } }).error.message).toMatch(/^malformed JSON body/);
      const array = await call('POST', '/v1/vms', { json: ['vm-1'], documented: '/v1/vms' });
      expect(array).toMatchObject({ status: 400, body: { error: { message: 'request body must be a JSON object' } } });
      const latin1 = await call('POST', '/v1/vms', { body: new Uint8Array([0x7b, 0xff, 0x7d]) });
      expect(latin1.status).toBe(400);
      const form = await call('POST', '/v1/vms', {
        body: 'vmId=vm-1',
        contentType: 'application/x-www-form-urlencoded',
        documented: '/v1/vms',
      });
      expect(form.status).toBe(415);
      const typed = await call('POST', '/v1/vms', {
        json: { vmId: 'vm-ld' },
        contentType: 'application/merge-patch+json; charset=utf-8',
      });
      expect(typed.status).toBe(201);
    });

    it('answers 413 for a body over 1 MiB, declared or streamed, and keeps serving', async () => {
      const big = JSON.stringify({ vmId: 'vm-big', pad: 'x'.repeat(MIB) });
      const declared = await call('POST', '/v1/vms', {
        body: big,
        contentType: 'application/json',
        documented: '/v1/vms',
      });
      expect(declared).toMatchObject({ status: 413, body: { error: { code: 'INVALID_REQUEST' } } });
      expect(declared.headers.get('connection')).toBe('close');

      const chunk = new Uint8Array(256 * 1024).fill(0x20);
      const streamed = await fetch(`${server.url}/v1/vms`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: new ReadableStream({
          start(controller) {
            for (let i = 0; i < 6; i++) controller.enqueue(chunk);
            controller.close();
          },
        }),
        duplex: 'half',
      });
      expect(streamed.status).toBe(413);
      await streamed.body?.cancel();
      const exact = await call('POST', '/v1/vms', { json: { vmId: 'vm-pad' }, documented: '/v1/vms' });
      expect(exact.status).toBe(201);
    });

    it('answers 413 to an upload that would never end', async () => {
      const outcome = await new Promise<string>((resolve) => {
        const req = httpRequest(`${server.url}/v1/vms`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
        });
        req.on('response', (res) => {
          resolve(`status ${res.statusCode}`);
          req.destroy();
        });
        req.on('error', (err) => resolve(`error ${err.message}`));
        const chunk = Buffer.alloc(MIB, 0x20);
        const pump = () => {
          while (req.write(chunk));
          req.once('drain', pump);
        };
        pump();
      });
      expect(outcome).toBe('status 413');
    });
  });

  describe('the rest', () => {
    it('serves its OpenAPI document at /openapi.json, with its own URL', async () => {
      const res = await call('GET', '/openapi.json', { documented: '/openapi.json' });
      const doc = res.body as OpenApiDocument;
      expect(doc.openapi).toBe('3.1.0');
      expect(doc.servers?.[0].url).toBe(server.url);
      expect(Object.keys(doc.paths)).toContain('/v1/migrations/{migrationId}/abort');
    });

    it('answers HEAD like GET without a body, and takes a trailing slash', async () => {
      const head = await fetch(`${server.url}/v1/vms`, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(await head.text()).toBe('');
      expect((await call('GET', '/v1/vms/', { documented: '/v1/vms' })).status).toBe(200);
    });

    it('closes: stops listening once the requests in flight are answered', async () => {
      const other = await startHttpApi(new FakeOrchestratorApi(), { port: 0, site: 'site-b' });
      expect(other.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect((await fetch(`${other.url}/v1/site`)).status).toBe(200);
      await other.close();
      await expect(fetch(`${other.url}/v1/site`)).rejects.toThrow();
    });

    it('answers the requests in flight before it closes', async () => {
      const slow = new FakeOrchestratorApi();
      const other = await startHttpApi(slow, { port: 0, site: 'site-b' });
      let release = () => {};
      slow.hold = new Promise((resolve) => (release = resolve));
      const inFlight = fetch(`${other.url}/v1/site`);
      await expect.poll(() => slow.calls.length).toBe(1);
      let closed = false;
      const closing = other.close().then(() => (closed = true));
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(closed).toBe(false);
      release();
      expect((await inFlight).status).toBe(200);
      await closing;
      expect(closed).toBe(true);
    });

    it('refuses to start on a port in use', async () => {
      const port = Number(new URL(server.url).port);
      await expect(startHttpApi(api, { port, site: 'site-a' })).rejects.toThrow(/EADDRINUSE/);
    });
  });
});

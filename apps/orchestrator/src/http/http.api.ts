/**
 * The orchestrator's HTTP API (node:http, JSON in and out): every route hands its request to the same
 * OrchestratorApi method the NATS transport calls, so validation and errors are the API's own. Errors answer
 * `{ "error": { "code", "message" } }` with the status of their code; an error that is not a WanmigError answers
 * 500 INTERNAL and its detail goes to the log only.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { type AddressInfo } from 'node:net';
import { Logger } from '@nestjs/common';
import { toWireError, WanmigError } from '@wanmig/protocol';
import { type OrchestratorApi } from '../orchestrator.api.js';
import { HttpError, httpStatusFor } from './http.errors.js';
import { apiRequestBody, DEFAULT_MAX_BODY_BYTES, parseJsonBody, readBody } from './http.request.js';
import { HttpRouter, type RouteMatch } from './http.router.js';
import { HTTP_ROUTES, OPENAPI_OPERATION } from './http.routes.js';
import { buildOpenApiDocument } from './openapi.js';

export interface HttpApiOptions {
  /** Interface to listen on; 127.0.0.1 unless given. */
  host?: string;
  /** 0: any free port. */
  port: number;
  /** The site this orchestrator serves (named in the OpenAPI document). */
  site: string;
  /** Largest request body accepted (413 past it); 1 MiB unless given. */
  maxBodyBytes?: number;
  logger?: HttpApiLogger;
}

export interface HttpApiLogger {
  error(message: string): void;
}

export interface HttpApiServer {
  /** Base URL, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** Stops taking connections, lets the requests in flight finish, then resolves. */
  close(): Promise<void>;
}

const DEFAULT_HOST = '127.0.0.1';
/** A request must arrive whole within this long. */
const REQUEST_TIMEOUT_MS = 30_000;

export async function startHttpApi(api: OrchestratorApi, options: HttpApiOptions): Promise<HttpApiServer> {
  const router = new HttpRouter(HTTP_ROUTES);
  const logger = options.logger ?? new Logger('http');
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  let openApi = '';

  const server = createServer({ requestTimeout: REQUEST_TIMEOUT_MS }, (req, res) => {
    void serve(req, res).catch((err: unknown) => {
      // Only writing the answer itself can end up here (the client left): nothing left to tell it.
      logger.error(`http: could not answer ${req.method} ${req.url}: ${describe(err)}`);
      res.destroy();
    });
  });

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    try {
      const match = router.match(req.method ?? 'GET', url.pathname);
      const body = parseJsonBody(await readBody(req, maxBodyBytes), req.headers['content-type']);
      const request = apiRequestBody(match, url.searchParams, body);
      if (match.route.operation === OPENAPI_OPERATION) {
        sendText(res, 200, openApi);
        return;
      }
      const reply = await call(api, match, request);
      const location = match.route.location?.(reply);
      if (location !== undefined) res.setHeader('Location', location);
      sendJson(res, match.route.status, reply);
    } catch (err) {
      sendError(req, res, err, logger);
    }
  }

  const url = await new Promise<string>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? DEFAULT_HOST, () => {
      server.off('error', reject);
      const address = server.address() as AddressInfo;
      const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      const base = `http://${host}:${address.port}`;
      openApi = JSON.stringify(buildOpenApiDocument({ site: options.site, serverUrl: base }));
      resolve(base);
    });
  });

  return {
    url,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeIdleConnections();
      }),
  };
}

function call(api: OrchestratorApi, match: RouteMatch, request: Record<string, unknown>): Promise<unknown> {
  const operation = match.route.operation;
  if (operation === OPENAPI_OPERATION) throw new Error('the OpenAPI document is served by the HTTP layer');
  return api[operation](request);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  sendText(res, status, JSON.stringify(body) ?? 'null');
}

function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
    'Cache-Control': 'no-store',
  });
  res.end(text);
}

function sendError(req: IncomingMessage, res: ServerResponse, err: unknown, logger: HttpApiLogger): void {
  if (!(err instanceof WanmigError)) logger.error(`http: ${req.method} ${req.url} failed: ${describe(err)}`);
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  const status = err instanceof HttpError ? err.status : err instanceof WanmigError ? httpStatusFor(err.code) : 500;
  if (err instanceof HttpError && err.allow !== undefined) res.setHeader('Allow', err.allow.join(', '));
  // A request refused before its body was read whole: the connection cannot be reused.
  if (!req.complete) res.setHeader('Connection', 'close');
  sendJson(res, status, { error: toWireError(err) });
}

function describe(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}

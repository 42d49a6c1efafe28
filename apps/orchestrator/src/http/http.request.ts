/**
 * Turns an HTTP request into the body an OrchestratorApi method takes: the JSON body, with the query parameters
 * (typed by the request's schema: `unfinished=true` is the boolean true) and the path parameters merged in. Whatever
 * the API does not know is then refused by its own validation (validateDto refuses unknown keys), by name.
 */
import { type IncomingMessage } from 'node:http';
import { API_SCHEMAS, ErrorCode, type JsonSchema } from '@wanmig/protocol';
import { HttpError } from './http.errors.js';
import { type RouteMatch } from './http.router.js';

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/**
 * The body as bytes, or undefined when there is none. Past `maxBytes` (declared or as it streams in) it stops reading
 * and fails with 413 at once: the answer then closes the connection, and the client reads it before its upload fails.
 */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer | undefined> {
  const declared = Number(req.headers['content-length'] ?? Number.NaN);
  if (declared > maxBytes) return Promise.reject(tooLargeError(maxBytes));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    const onData = (chunk: Buffer) => {
      received += chunk.length;
      if (received > maxBytes) {
        cleanup();
        reject(tooLargeError(maxBytes));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(received === 0 ? undefined : Buffer.concat(chunks, received));
    };
    const onError = (err: Error) => {
      cleanup();
      reject(err);
    };
    const onClose = () => {
      if (!req.complete) onError(new Error('the client left before its request body ended'));
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

function tooLargeError(maxBytes: number): HttpError {
  return new HttpError(413, ErrorCode.InvalidRequest, `request body larger than ${maxBytes} bytes`);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses a JSON body (415 unless it is declared JSON or undeclared; 400 when it does not parse). */
export function parseJsonBody(bytes: Buffer | undefined, contentType: string | undefined): unknown {
  if (bytes === undefined) return undefined;
  if (contentType !== undefined && !isJsonMediaType(contentType)) {
    throw new HttpError(415, ErrorCode.InvalidRequest, `request body must be application/json, not ${contentType}`);
  }
  try {
    return JSON.parse(utf8.decode(bytes)) as unknown;
  } catch (cause) {
    const why = cause instanceof SyntaxError ? cause.message : 'not UTF-8';
    throw new HttpError(400, ErrorCode.InvalidRequest, `malformed JSON body: ${why}`, { cause });
  }
}

function isJsonMediaType(contentType: string): boolean {
  const type = contentType.split(';')[0].trim().toLowerCase();
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}

/** The API body of a routed request: JSON body ∪ typed query ∪ path parameters (the same key twice: 400). */
export function apiRequestBody(match: RouteMatch, query: URLSearchParams, body: unknown): Record<string, unknown> {
  const { route, params } = match;
  if (body !== undefined && (body === null || typeof body !== 'object' || Array.isArray(body))) {
    throw new HttpError(400, ErrorCode.InvalidRequest, 'request body must be a JSON object');
  }
  const request: Record<string, unknown> = { ...(body as Record<string, unknown> | undefined) };
  const schema = route.request === undefined ? undefined : API_SCHEMAS[route.request.schema];
  for (const key of new Set(query.keys())) {
    if (Object.hasOwn(request, key)) throw twice(key, 'the query and the body');
    const values = query.getAll(key).map((value) => queryValue(value, schema?.properties?.[key]));
    request[key] = values.length === 1 ? values[0] : values;
  }
  for (const [key, value] of Object.entries(params)) {
    if (Object.hasOwn(request, key) && request[key] !== value) throw twice(key, 'the path and the request');
    request[key] = value;
  }
  if (route.request === undefined && Object.keys(request).length > 0) {
    throw new HttpError(
      400,
      ErrorCode.InvalidRequest,
      `${route.method} ${route.path} takes no parameters (got ${Object.keys(request).join(', ')})`,
    );
  }
  return request;
}

function twice(key: string, where: string): HttpError {
  return new HttpError(400, ErrorCode.InvalidRequest, `${key} given both in ${where}`);
}

/** A query value as the property's schema types it: booleans (a bare `?flag` is true) and numbers; else the string. */
function queryValue(value: string, property: JsonSchema | undefined): unknown {
  const types = property?.type === undefined ? [] : [property.type].flat();
  if (types.includes('boolean')) {
    if (value === 'true' || value === '') return true;
    if (value === 'false') return false;
  }
  if ((types.includes('integer') || types.includes('number')) && /^-?\d+(\.\d+)?$/.test(value)) return Number(value);
  return value;
}

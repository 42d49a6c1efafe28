/**
 * The OpenAPI 3.1 document of the HTTP API, built from the route table and the protocol's JSON Schemas (a pure
 * function: the same routes and options, the same document).
 */
import { API_SCHEMAS, JSON_SCHEMA_DIALECT, type JsonSchema } from '@wanmig/protocol';
import { HTTP_ROUTES, type HttpRoute } from './http.routes.js';

export interface OpenApiOptions {
  site: string;
  /** Base URL the API is served at (listed under `servers`). */
  serverUrl?: string;
  routes?: readonly HttpRoute[];
}

export interface OpenApiParameter {
  name: string;
  in: 'path' | 'query';
  required: boolean;
  description?: string;
  schema: JsonSchema;
}

export interface OpenApiMediaType {
  schema: JsonSchema;
}

export interface OpenApiResponse {
  description: string;
  headers?: Record<string, { description: string; schema: JsonSchema }>;
  content?: Record<string, OpenApiMediaType>;
}

export interface OpenApiOperation {
  operationId: string;
  summary: string;
  tags: string[];
  parameters?: OpenApiParameter[];
  requestBody?: { required: boolean; content: Record<string, OpenApiMediaType> };
  responses: Record<string, OpenApiResponse | { $ref: string }>;
}

export interface OpenApiDocument {
  openapi: '3.1.0';
  info: { title: string; version: string; description: string };
  jsonSchemaDialect: string;
  servers?: { url: string; description?: string }[];
  tags: { name: string; description: string }[];
  paths: Record<string, Partial<Record<Lowercase<HttpRoute['method']>, OpenApiOperation>>>;
  components: {
    schemas: Record<string, JsonSchema>;
    responses: Record<string, OpenApiResponse>;
  };
}

export const OPENAPI_VERSION = '3.1.0';
export const HTTP_API_VERSION = '1.0.0';
const JSON_TYPE = 'application/json';
const ERROR_REPLY = 'HttpErrorReply';

/** The error responses, by status: each answers `{ error: { code, message } }`. */
const ERROR_RESPONSES: Record<number, { name: string; description: string }> = {
  400: { name: 'BadRequest', description: 'INVALID_REQUEST: malformed JSON, or a request that fails validation.' },
  404: { name: 'NotFound', description: 'NOT_FOUND: no such migration or VM.' },
  409: { name: 'Conflict', description: 'CONFLICT: the request does not fit the current state.' },
  413: { name: 'PayloadTooLarge', description: 'INVALID_REQUEST: the request body is too large.' },
  415: { name: 'UnsupportedMediaType', description: 'INVALID_REQUEST: the request body is not application/json.' },
  500: { name: 'Internal', description: 'INTERNAL (or another code without an HTTP status of its own).' },
  503: { name: 'Unavailable', description: 'UNAVAILABLE: a service or site needed for it does not answer.' },
  507: { name: 'NoSpace', description: 'NO_SPACE: not enough room for the disk or memory.' },
};

const TAGS: OpenApiDocument['tags'] = [
  { name: 'migrations', description: 'Live migrations of VMs between sites' },
  { name: 'vms', description: 'The VMs of this site' },
  { name: 'sites', description: 'This site and its peers' },
  { name: 'meta', description: 'About the API itself' },
];

const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });

export function buildOpenApiDocument(options: OpenApiOptions): OpenApiDocument {
  const routes = options.routes ?? HTTP_ROUTES;
  const paths: OpenApiDocument['paths'] = {};
  for (const route of routes) {
    paths[route.path] ??= {};
    paths[route.path][lower(route.method)] = operation(route);
  }
  return {
    openapi: OPENAPI_VERSION,
    info: {
      title: `wanmig orchestrator (site ${options.site})`,
      version: HTTP_API_VERSION,
      description:
        'WAN live migration of VMs: the orchestrator of one site. Errors answer `{ "error": { "code", "message" } }`.',
    },
    jsonSchemaDialect: JSON_SCHEMA_DIALECT,
    ...(options.serverUrl === undefined ? {} : { servers: [{ url: options.serverUrl, description: options.site }] }),
    tags: TAGS.filter((tag) => routes.some((route) => route.tag === tag.name)),
    paths,
    components: {
      schemas: {
        ...componentSchemas(),
        [ERROR_REPLY]: {
          title: ERROR_REPLY,
          description: 'What every error answers.',
          type: 'object',
          properties: { error: ref('WireError') },
          required: ['error'],
          additionalProperties: false,
        },
      },
      responses: Object.fromEntries(
        Object.values(ERROR_RESPONSES).map(({ name, description }) => [
          name,
          { description, content: { [JSON_TYPE]: { schema: ref(ERROR_REPLY) } } },
        ]),
      ),
    },
  };
}

/** API_SCHEMAS without `$schema` (the document's `jsonSchemaDialect` says it once). */
function componentSchemas(): Record<string, JsonSchema> {
  return Object.fromEntries(
    Object.entries(API_SCHEMAS).map(([name, schema]) => {
      const { $schema: _dialect, ...rest } = schema;
      return [name, rest];
    }),
  );
}

function operation(route: HttpRoute): OpenApiOperation {
  const parameters = [...pathParameters(route), ...queryParameters(route)];
  const result: OpenApiOperation = {
    operationId: route.operation,
    summary: route.summary,
    tags: [route.tag],
    ...(parameters.length === 0 ? {} : { parameters }),
    responses: {},
  };
  if (route.request?.in === 'body') {
    result.requestBody = { required: true, content: { [JSON_TYPE]: { schema: ref(route.request.schema) } } };
  }
  result.responses[String(route.status)] = {
    description: route.status === 201 ? 'Created' : 'OK',
    ...(route.location === undefined
      ? {}
      : { headers: { Location: { description: 'Where what was created is found', schema: { type: 'string' } } } }),
    content: { [JSON_TYPE]: { schema: replySchema(route) } },
  };
  for (const status of [...route.errors, 500]) {
    const response = ERROR_RESPONSES[status];
    if (response === undefined) throw new TypeError(`${route.operation}: no error response for status ${status}`);
    result.responses[String(status)] = { $ref: `#/components/responses/${response.name}` };
  }
  return result;
}

function replySchema(route: HttpRoute): JsonSchema {
  if (route.reply === undefined) return { type: 'object', description: 'An OpenAPI 3.1 document.' };
  return route.replyArray ? { type: 'array', items: ref(route.reply) } : ref(route.reply);
}

function pathParameters(route: HttpRoute): OpenApiParameter[] {
  const names = [...route.path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
  return names.map((name) => {
    const property = requestProperty(route, name);
    if (property === undefined) throw new TypeError(`${route.operation}: path parameter ${name} is not in its request`);
    return parameter(name, 'path', true, property);
  });
}

function queryParameters(route: HttpRoute): OpenApiParameter[] {
  if (route.request?.in !== 'query') return [];
  const schema = API_SCHEMAS[route.request.schema];
  return Object.entries(schema.properties ?? {}).map(([name, property]) =>
    parameter(name, 'query', schema.required?.includes(name) ?? false, property),
  );
}

function requestProperty(route: HttpRoute, name: string): JsonSchema | undefined {
  return route.request === undefined ? undefined : API_SCHEMAS[route.request.schema].properties?.[name];
}

/** A parameter's schema is its property's, without null (a URL cannot say null) and with its description moved up. */
function parameter(name: string, where: 'path' | 'query', required: boolean, property: JsonSchema): OpenApiParameter {
  const { description, ...schema } = property;
  if (Array.isArray(schema.type)) {
    const types = schema.type.filter((type) => type !== 'null');
    schema.type = types.length === 1 ? types[0] : types;
  }
  if (schema.enum !== undefined) schema.enum = schema.enum.filter((value) => value !== null);
  return { name, in: where, required, ...(description === undefined ? {} : { description }), schema };
}

function lower<M extends string>(method: M): Lowercase<M> {
  return method.toLowerCase() as Lowercase<M>;
}

import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { type OpenApiDocument, type OpenApiResponse } from './openapi.js';

const COMPONENT_SCHEMA = '#/components/schemas/';
const COMPONENT_RESPONSE = '#/components/responses/';

/**
 * Validators for what an OpenAPI document says an operation answers: the component schemas are registered under
 * their names (refs rewritten), then each documented response compiles against them. Strict, with wanmig's formats.
 */
export class DocumentedReplies {
  private readonly ajv = new Ajv2020({ strict: true, allErrors: true, allowUnionTypes: true });
  private readonly cache = new Map<string, ValidateFunction>();

  constructor(private readonly doc: OpenApiDocument) {
    this.ajv.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
    this.ajv.addFormat('date-time', /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/i);
    for (const [name, schema] of Object.entries(doc.components.schemas)) this.ajv.addSchema(localRefs(schema), name);
  }

  /** The validator of the body `method path` answers with `status` (the document must list it). */
  validator(method: string, path: string, status: number): ValidateFunction {
    const key = `${method} ${path} ${status}`;
    let validate = this.cache.get(key);
    if (validate === undefined) {
      const operation = this.doc.paths[path]?.[method.toLowerCase() as 'get'];
      const entry = operation?.responses[String(status)];
      if (entry === undefined) throw new Error(`the document lists no ${status} for ${key}`);
      const response: OpenApiResponse | undefined =
        '$ref' in entry ? this.doc.components.responses[entry.$ref.slice(COMPONENT_RESPONSE.length)] : entry;
      const schema = response?.content?.['application/json']?.schema;
      if (schema === undefined) throw new Error(`no JSON schema for ${key}`);
      validate = this.ajv.compile(localRefs(schema));
      this.cache.set(key, validate);
    }
    return validate;
  }
}

function localRefs(schema: object): object {
  return JSON.parse(JSON.stringify(schema).replaceAll(`"${COMPONENT_SCHEMA}`, '"')) as object;
}

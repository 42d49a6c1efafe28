export { JSON_SCHEMA_DIALECT, type JsonSchema, type JsonType } from './json-schema.js';
export { SchemaGenerationError } from './schema.errors.js';
export { dtoSchema, type DtoSchemaAnnotations } from './dto.schema.js';
export { API_REQUEST_DTOS, API_SCHEMAS, type ApiSchemaName } from './api.schemas.js';

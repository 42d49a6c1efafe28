/**
 * Builds the JSON Schema (2020-12) of a request DTO from class-validator's own metadata, so the published schema is
 * the validator's rules and not a second copy of them. Mirrors what `validateDto` does:
 * - unknown keys are refused: `additionalProperties: false`;
 * - a property with `@IsOptional()` may be absent or null (class-validator skips every check on null);
 * - a property initialised in the class is filled in when absent: its value from `new Cls()` becomes `default`;
 * - `required` lists the properties that are neither optional nor defaulted;
 * - a `@NestedDto(() => Cls)` property is Cls's own schema (without its title).
 * Only the decorators mapped below are understood; any other throws a SchemaGenerationError, so a new decorator on a
 * DTO can never silently widen its schema.
 */
import { getMetadataStorage, ValidationTypes, type MetadataStorage } from 'class-validator';
import { nestedDtoType } from '../nested-dto.decorator.js';
import { type JsonSchema, type JsonType } from './json-schema.js';
import { SchemaGenerationError } from './schema.errors.js';

type ValidationMetadata = ReturnType<MetadataStorage['getTargetValidationMetadatas']>[number];

/** Descriptions the metadata cannot carry (doc comments do not survive compilation). */
export interface DtoSchemaAnnotations<T> {
  description?: string;
  properties?: Partial<Record<keyof T & string, string>>;
}

/**
 * UUID patterns of class-validator's `@IsUUID(version)` (validator.js' `isUUID`), case-insensitivity spelled out since
 * JSON Schema patterns have no flags.
 */
const HEX = '[0-9a-fA-F]';
const uuidPattern = (version: string): string => `${HEX}{8}-${HEX}{4}-${version}${HEX}{3}-[89abAB]${HEX}{3}-${HEX}{12}`;
const UUID_PATTERNS: Record<string, string> = {
  all: `^(?:${uuidPattern('[1-8]')}|00000000-0000-0000-0000-000000000000|[fF]{8}-[fF]{4}-[fF]{4}-[fF]{4}-[fF]{12})$`,
  loose: `^${HEX}{8}-${HEX}{4}-${HEX}{4}-${HEX}{4}-${HEX}{12}$`,
  ...Object.fromEntries(['1', '2', '3', '4', '5', '6', '7', '8'].map((v) => [v, `^${uuidPattern(v)}$`])),
};

/** What one property's decorators say, gathered before it is written out as a schema. */
interface PropertyRules {
  /** Type checks asked for (IsInt, IsString…) and types implied by other checks (Min implies a number). */
  types: Set<JsonType>;
  implied: Set<JsonType>;
  keywords: JsonSchema;
  /** `each: true` checks, which apply to the items of an array. */
  items: PropertyRules | undefined;
  optional: boolean;
  conditional: boolean;
  /** The DTO class of a `@NestedDto` property. */
  nested: (new () => object) | undefined;
}

const emptyRules = (): PropertyRules => ({
  types: new Set(),
  implied: new Set(),
  keywords: {},
  items: undefined,
  optional: false,
  conditional: false,
  nested: undefined,
});

export function dtoSchema<T extends object>(dto: new () => T, annotations: DtoSchemaAnnotations<T> = {}): JsonSchema {
  const storage = getMetadataStorage();
  // The same query validateSync makes (no groups, `always` off), so the same decorators count.
  const metadatas = storage.getTargetValidationMetadatas(dto, '', false, false, undefined);
  if (metadatas.length === 0) throw new SchemaGenerationError('has no class-validator metadata', { dto: dto.name });

  const byProperty = new Map<string, PropertyRules>();
  for (const metadata of metadatas) {
    let rules = byProperty.get(metadata.propertyName);
    if (rules === undefined) byProperty.set(metadata.propertyName, (rules = emptyRules()));
    applyMetadata(dto, storage, metadata, rules);
  }

  const defaults = new dto() as Record<string, unknown>;
  const properties: Record<string, JsonSchema> = {};
  const required: string[] = [];
  for (const [name, rules] of byProperty) {
    let schema = toSchema(dto.name, name, rules);
    const description = annotations.properties?.[name as keyof T & string];
    if (description !== undefined) schema = { description, ...schema };
    const initial = defaults[name];
    if (initial !== undefined) schema.default = initial;
    if (rules.optional) schema = nullable(schema);
    properties[name] = schema;
    if (!rules.optional && !rules.conditional && initial === undefined) required.push(name);
  }
  for (const name of Object.keys(annotations.properties ?? {})) {
    if (!(name in properties))
      throw new SchemaGenerationError('annotated but not validated', { dto: dto.name, property: name });
  }

  return {
    title: dto.name,
    ...(annotations.description === undefined ? {} : { description: annotations.description }),
    type: 'object',
    properties,
    required,
    additionalProperties: false,
  };
}

function applyMetadata(
  dtoClass: new () => object,
  storage: MetadataStorage,
  metadata: ValidationMetadata,
  rules: PropertyRules,
): void {
  const dto = dtoClass.name;
  const property = metadata.propertyName;
  switch (metadata.type) {
    case ValidationTypes.NESTED_VALIDATION:
      if (metadata.each) throw new SchemaGenerationError('nested DTOs in arrays are not mapped', { dto, property });
      rules.nested = nestedDtoType(dtoClass, property);
      if (rules.nested === undefined) {
        throw new SchemaGenerationError('@ValidateNested without @NestedDto: its class is unknown', { dto, property });
      }
      rules.types.add('object');
      return;
    case ValidationTypes.CONDITIONAL_VALIDATION:
      // @IsOptional() is the conditional `value != null`; @ValidateIf(fn) is opaque: the property may be absent,
      // and the schema keeps the property's checks (stricter than the validator when fn says "skip").
      if (metadata.name === 'isOptional') rules.optional = true;
      else rules.conditional = true;
      return;
    case ValidationTypes.WHITELIST:
      return; // @Allow(): accepted, unchecked.
    case ValidationTypes.IS_DEFINED:
      return; // Required unless optional: the default for a property without a default value.
    case ValidationTypes.CUSTOM_VALIDATION:
      break;
    default:
      throw new SchemaGenerationError(`unsupported validation type ${metadata.type}`, { dto, property });
  }
  const name = metadata.name ?? storage.getTargetValidatorConstraints(metadata.constraintCls)[0]?.name ?? 'anonymous';
  if (metadata.validateIf !== undefined) {
    throw new SchemaGenerationError(`a conditional @${name} cannot be stated as a schema`, {
      dto,
      property,
      constraint: name,
    });
  }
  let target = rules;
  if (metadata.each) target = rules.items ??= emptyRules();
  applyConstraint(dto, property, name, metadata.constraints ?? [], target);
}

function applyConstraint(dto: string, property: string, name: string, constraints: unknown[], rules: PropertyRules) {
  const keywords = rules.keywords;
  const [first, second] = constraints;
  switch (name) {
    case 'isInt':
      rules.types.add('integer');
      return;
    case 'isNumber':
      rules.types.add('number');
      return;
    case 'isString':
      rules.types.add('string');
      return;
    case 'isBoolean':
      rules.types.add('boolean');
      return;
    case 'isArray':
      rules.types.add('array');
      return;
    case 'isObject':
      rules.types.add('object');
      return;
    case 'isIp': {
      rules.implied.add('string');
      // class-validator's version: absent (either), 4 or 6, as a number or a string.
      const version = typeof first === 'number' || typeof first === 'string' ? `${first}` : first;
      if (version === undefined) {
        keywords.anyOf = ['ipv4', 'ipv6'].map((format) => ({ type: 'string', format }));
      } else if (version === '4' || version === '6') {
        keywords.format = `ipv${version}`;
      } else {
        throw new SchemaGenerationError(`unsupported IP version ${JSON.stringify(first)}`, { dto, property });
      }
      return;
    }
    case 'min':
      rules.implied.add('number');
      keywords.minimum = numberConstraint(dto, property, name, first);
      return;
    case 'max':
      rules.implied.add('number');
      keywords.maximum = numberConstraint(dto, property, name, first);
      return;
    case 'arrayMinSize':
      rules.implied.add('array');
      keywords.minItems = numberConstraint(dto, property, name, first);
      return;
    case 'arrayMaxSize':
      rules.implied.add('array');
      keywords.maxItems = numberConstraint(dto, property, name, first);
      return;
    case 'isIn':
      if (!Array.isArray(first)) throw new SchemaGenerationError('@IsIn without a list', { dto, property });
      keywords.enum = [...(first as unknown[])];
      return;
    case 'matches':
      rules.implied.add('string');
      keywords.pattern = regexSource(dto, property, first, second);
      return;
    case 'isUuid': {
      rules.implied.add('string');
      const version = first ?? 'all';
      const pattern = typeof version === 'string' || typeof version === 'number' ? UUID_PATTERNS[version] : undefined;
      if (pattern === undefined) {
        throw new SchemaGenerationError(`unsupported UUID version ${JSON.stringify(first)}`, { dto, property });
      }
      keywords.format = 'uuid';
      keywords.pattern = pattern;
      return;
    }
    default:
      throw new SchemaGenerationError(`no JSON Schema mapping for @${name}`, { dto, property, constraint: name });
  }
}

function numberConstraint(dto: string, property: string, name: string, value: unknown): number {
  if (typeof value !== 'number') throw new SchemaGenerationError(`@${name} without a number`, { dto, property });
  return value;
}

/** JSON Schema patterns are ECMA-262 without flags, matched anywhere in the string, as validator.js `matches` does. */
function regexSource(dto: string, property: string, pattern: unknown, modifiers: unknown): string {
  const flags = typeof modifiers === 'string' ? modifiers : '';
  const regex = pattern instanceof RegExp ? pattern : new RegExp(String(pattern), flags);
  if (regex.flags !== '' || flags !== '') {
    throw new SchemaGenerationError(`regex flags /${regex.flags || flags} have no JSON Schema form`, {
      dto,
      property,
      constraint: 'matches',
    });
  }
  return regex.source;
}

function toSchema(dto: string, property: string, rules: PropertyRules): JsonSchema {
  if (rules.nested !== undefined) {
    const { title: _title, ...nested } = dtoSchema(rules.nested);
    if (Object.keys(rules.keywords).length > 0 || rules.items !== undefined) {
      throw new SchemaGenerationError('a nested DTO takes no other checks', { dto, property });
    }
    return nested;
  }
  const schema: JsonSchema = {};
  const type = resolveType(dto, property, rules);
  if (type !== undefined && rules.keywords.enum === undefined) schema.type = type;
  Object.assign(schema, rules.keywords);
  if (type !== undefined && rules.keywords.enum !== undefined) {
    // Keep only the listed values that also pass the type check (e.g. @IsIn([1, 'a']) with @IsInt()).
    schema.enum = rules.keywords.enum.filter((value) => hasType(value, type));
  }
  if (rules.items !== undefined) {
    if (type !== 'array') {
      throw new SchemaGenerationError('`each: true` checks need @IsArray()', { dto, property });
    }
    schema.items = toSchema(dto, `${property}[]`, rules.items);
  }
  return schema;
}

/** One type for the property: asked-for types win over implied ones; integer is the narrower number. */
function resolveType(dto: string, property: string, rules: PropertyRules): JsonType | undefined {
  const asked = narrow(rules.types);
  const implied = narrow(rules.implied);
  if (asked.size > 1 || implied.size > 1) {
    throw new SchemaGenerationError(`contradictory type checks (${[...rules.types, ...rules.implied].join(', ')})`, {
      dto,
      property,
    });
  }
  const [explicit] = asked;
  const [implicit] = implied;
  if (explicit === undefined) return implicit;
  if (implicit !== undefined && implicit !== explicit && !(implicit === 'number' && explicit === 'integer')) {
    throw new SchemaGenerationError(`${implicit} checks on a ${explicit} property`, { dto, property });
  }
  return explicit;
}

function narrow(types: Set<JsonType>): Set<JsonType> {
  const result = new Set(types);
  if (result.has('integer')) result.delete('number');
  return result;
}

function hasType(value: unknown, type: JsonType): boolean {
  switch (type) {
    case 'integer':
      return Number.isInteger(value);
    case 'array':
      return Array.isArray(value);
    case 'null':
      return value === null;
    case 'object':
      return typeof value === 'object' && value !== null && !Array.isArray(value);
    default:
      return typeof value === type;
  }
}

/** Optional properties accept null too: class-validator's @IsOptional() skips every check on null. */
function nullable(schema: JsonSchema): JsonSchema {
  if (schema.enum !== undefined) return { ...schema, enum: [...schema.enum, null] };
  if (typeof schema.type === 'string') return { ...schema, type: [schema.type, 'null'] };
  if (schema.type === undefined) return schema;
  return { anyOf: [schema, { type: 'null' }] };
}

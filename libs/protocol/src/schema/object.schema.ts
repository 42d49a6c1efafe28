/**
 * Building blocks for the hand-written reply schemas. `objectSchema<T>()` ties a schema to its TypeScript interface:
 * the compiler insists on one property schema per key of T, and on `optional` naming exactly T's `?` keys, so a field
 * added to or removed from an interface cannot be forgotten in its schema.
 */
import { type JsonSchema } from './json-schema.js';

/** Keys of T declared with `?`. */
export type OptionalKeys<T> = { [K in keyof T]-?: Record<never, never> extends Pick<T, K> ? K : never }[keyof T];

export interface ObjectShape<T> {
  description?: string;
  properties: { [K in keyof T & string]-?: JsonSchema };
  /** Exactly the optional keys of T. */
  optional: { [K in OptionalKeys<T> & string]-?: true };
}

/** An object with exactly T's keys (`additionalProperties: false`): the rest are `required`. */
export function objectSchema<T>(shape: ObjectShape<T>): JsonSchema {
  const optional = new Set(Object.keys(shape.optional));
  return {
    ...(shape.description === undefined ? {} : { description: shape.description }),
    type: 'object',
    properties: shape.properties,
    required: Object.keys(shape.properties).filter((key) => !optional.has(key)),
    additionalProperties: false,
  };
}

export const string = (description?: string): JsonSchema =>
  description === undefined ? { type: 'string' } : { description, type: 'string' };

export const boolean = (description?: string): JsonSchema =>
  description === undefined ? { type: 'boolean' } : { description, type: 'boolean' };

/** A count or size: an integer ≥ 0. */
export const count = (description?: string): JsonSchema => ({
  ...(description === undefined ? {} : { description }),
  type: 'integer',
  minimum: 0,
});

/** A measured quantity (seconds, milliseconds): a number ≥ 0. */
export const amount = (description?: string): JsonSchema => ({
  ...(description === undefined ? {} : { description }),
  type: 'number',
  minimum: 0,
});

/** RFC 3339 / ISO-8601 time. */
export const timestamp = (description?: string): JsonSchema => ({
  ...(description === undefined ? {} : { description }),
  type: 'string',
  format: 'date-time',
});

export const uuid = (description?: string): JsonSchema => ({
  ...(description === undefined ? {} : { description }),
  type: 'string',
  format: 'uuid',
});

/** One of the values of an `as const` object or tuple. */
export const oneOfValues = (values: Readonly<Record<string, string>> | readonly string[], description?: string) =>
  ({
    ...(description === undefined ? {} : { description }),
    type: 'string',
    enum: Array.isArray(values) ? [...(values as readonly string[])] : Object.values(values),
  }) satisfies JsonSchema;

export const arrayOf = (items: JsonSchema, description?: string): JsonSchema => ({
  ...(description === undefined ? {} : { description }),
  type: 'array',
  items,
});

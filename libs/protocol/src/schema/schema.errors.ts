/**
 * A DTO whose validation cannot be stated as a JSON Schema (an unmapped decorator, a regex flag JSON Schema has no
 * way to say, contradictory type checks). A programming error, raised when the schemas are built, never on the wire:
 * so it extends Error, not WanmigError.
 */
export class SchemaGenerationError extends Error {
  /** The DTO class and property, and the class-validator constraint that could not be mapped. */
  readonly dto: string;
  readonly property?: string;
  readonly constraint?: string;
  constructor(message: string, fields: { dto: string; property?: string; constraint?: string; cause?: unknown }) {
    const where = fields.property === undefined ? fields.dto : `${fields.dto}.${fields.property}`;
    super(`${where}: ${message}`, { cause: fields.cause });
    this.name = 'SchemaGenerationError';
    this.dto = fields.dto;
    this.property = fields.property;
    this.constraint = fields.constraint;
  }
}

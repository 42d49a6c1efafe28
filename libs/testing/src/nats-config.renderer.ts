/**
 * Renders a plain object as a nats-server configuration file. The format is a superset of JSON, but the native
 * block syntax is easier to read when a failing test leaves the file behind. Strings are JSON-quoted (the
 * parser accepts the same escapes), so temp paths with odd characters are safe.
 */
export type NatsConfigValue = string | number | boolean | NatsConfigValue[] | NatsConfigObject;
export interface NatsConfigObject {
  [key: string]: NatsConfigValue | undefined;
}

const INDENT = '  ';

export function renderNatsConfig(config: NatsConfigObject): string {
  return renderEntries(config, 0);
}

function renderEntries(object: NatsConfigObject, depth: number): string {
  const pad = INDENT.repeat(depth);
  return Object.entries(object)
    .filter((entry): entry is [string, NatsConfigValue] => entry[1] !== undefined)
    .map(([key, value]) => `${pad}${key}${isObject(value) ? ' ' : ': '}${renderValue(value, depth)}\n`)
    .join('');
}

function renderValue(value: NatsConfigValue, depth: number): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new RangeError(`nats config values must be finite numbers, got ${value}`);
    return String(value);
  }
  if (typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) {
    const pad = INDENT.repeat(depth + 1);
    return `[\n${value.map((item) => `${pad}${renderValue(item, depth + 1)}\n`).join('')}${INDENT.repeat(depth)}]`;
  }
  return `{\n${renderEntries(value, depth + 1)}${INDENT.repeat(depth)}}`;
}

function isObject(value: NatsConfigValue): value is NatsConfigObject {
  return typeof value === 'object' && !Array.isArray(value);
}

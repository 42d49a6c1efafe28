import { isIPv4, isIPv6 } from 'node:net';
import { Ajv2020 } from 'ajv/dist/2020.js';

/**
 * An ajv for wanmig's schemas in tests: strict (an unknown keyword or a misplaced one fails compiling), with the
 * formats wanmig uses checked rather than ignored.
 */
export function schemaValidator(): Ajv2020 {
  const ajv = new Ajv2020({ strict: true, allErrors: true, allowUnionTypes: true });
  ajv.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
  ajv.addFormat('date-time', /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$/i);
  ajv.addFormat('ipv4', { type: 'string', validate: (text: string) => isIPv4(text) });
  ajv.addFormat('ipv6', { type: 'string', validate: (text: string) => isIPv6(text) });
  return ajv;
}

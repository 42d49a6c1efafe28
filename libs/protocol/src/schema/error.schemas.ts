import { ErrorCode } from '../error-codes.js';
import { type WireError } from '../errors.js';
import { boolean, objectSchema, oneOfValues, string } from './object.schema.js';

/** `{ code, message }`: how an error crosses NATS, and what the HTTP API puts under `error`. */
export const WIRE_ERROR_SCHEMA = objectSchema<WireError>({
  description: 'An error as wanmig reports it: a stable code and a message fit for an operator.',
  properties: {
    code: oneOfValues(ErrorCode),
    message: string(),
    retryable: boolean('Asking again may help (a service away, no answer in time); absent: the code says.'),
  },
  optional: { retryable: true },
});

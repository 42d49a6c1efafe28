import { ErrorCode, WanmigError } from '@wanmig/protocol';

/** HTTP status of each error code; a code not listed answers 500. */
const STATUS_BY_CODE: Partial<Record<ErrorCode, number>> = {
  [ErrorCode.InvalidRequest]: 400,
  [ErrorCode.NotFound]: 404,
  [ErrorCode.Conflict]: 409,
  [ErrorCode.Unavailable]: 503,
  [ErrorCode.NoSpace]: 507,
};

export function httpStatusFor(code: ErrorCode): number {
  return STATUS_BY_CODE[code] ?? 500;
}

/**
 * A request the HTTP layer refuses before the API sees it (no such route, wrong method, body too large, not JSON).
 * It carries the status to answer with; its code is what the body says.
 */
export class HttpError extends WanmigError {
  readonly status: number;
  /** Methods the path takes (a 405's `Allow` header). */
  readonly allow?: readonly string[];
  constructor(
    status: number,
    code: ErrorCode,
    message: string,
    fields: { allow?: readonly string[]; cause?: unknown } = {},
  ) {
    super(code, message, { cause: fields.cause });
    this.name = 'HttpError';
    this.status = status;
    this.allow = fields.allow;
  }
}

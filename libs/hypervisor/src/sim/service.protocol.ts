import { ErrorCode } from '@wanmig/protocol';

/**
 * The guest's TCP service: one request per line, one reply line per request, in order.
 *
 *   PING           → PONG <counter>
 *   COUNTER        → <counter>
 *   GET <key>      → <value>               (keys k0..k255 of the key-value area in RAM)
 *   PAGE <n>       → <sha256 of RAM page n, hex>
 *   DISK <block>   → <sha256 of disk bytes [block × 64 KiB, +64 KiB), hex>
 *   STATE          → <one-line JSON summary>
 *   QUIT           → BYE, then the connection closes
 *
 * Failures reply `ERR <CODE> <message>` (codes from ErrorCode). Commands are case-insensitive.
 */
export const ServiceCommand = {
  Ping: 'PING',
  Counter: 'COUNTER',
  Get: 'GET',
  Page: 'PAGE',
  Disk: 'DISK',
  State: 'STATE',
  Quit: 'QUIT',
} as const;
export type ServiceCommand = (typeof ServiceCommand)[keyof typeof ServiceCommand];

export type ServiceRequest =
  | { command: typeof ServiceCommand.Ping | typeof ServiceCommand.Counter | typeof ServiceCommand.State }
  | { command: typeof ServiceCommand.Quit }
  | { command: typeof ServiceCommand.Get; key: string }
  | { command: typeof ServiceCommand.Page; page: number }
  | { command: typeof ServiceCommand.Disk; block: number };

/** Longest request line the service reads; a longer one is refused and the connection closed. */
export const MAX_SERVICE_LINE = 1024;

export class ServiceRequestError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'ServiceRequestError';
  }
}

/** Parses one request line (without its newline); throws ServiceRequestError (INVALID_REQUEST). */
export function parseServiceRequest(line: string): ServiceRequest {
  const parts = line.trim().split(/\s+/);
  const command = (parts[0] ?? '').toUpperCase();
  const args = parts.slice(1).filter((p) => p !== '');
  const bad = (message: string) => new ServiceRequestError(ErrorCode.InvalidRequest, message);
  const arity = (n: number) => {
    if (args.length !== n) throw bad(`${command} takes ${n === 0 ? 'no argument' : `${n} argument`}`);
  };
  const index = (what: string): number => {
    const text = args[0];
    if (!/^\d{1,15}$/.test(text)) throw bad(`${what} must be a non-negative integer, got ${JSON.stringify(text)}`);
    return Number(text);
  };
  switch (command) {
    case ServiceCommand.Ping:
    case ServiceCommand.Counter:
    case ServiceCommand.State:
    case ServiceCommand.Quit:
      arity(0);
      return { command };
    case ServiceCommand.Get:
      arity(1);
      return { command, key: args[0] };
    case ServiceCommand.Page:
      arity(1);
      return { command, page: index('page') };
    case ServiceCommand.Disk:
      arity(1);
      return { command, block: index('block') };
    case '':
      throw bad('empty request');
    default:
      throw bad(`unknown command ${JSON.stringify(parts[0])}`);
  }
}

export function formatServiceError(code: ErrorCode, message: string): string {
  return `ERR ${code} ${message.replace(/[\r\n]+/g, ' ')}`;
}

/** Reads a reply line: `{ ok: true, value }` or `{ ok: false, code, message }`. */
export function parseServiceReply(
  line: string,
): { ok: true; value: string } | { ok: false; code: string; message: string } {
  const m = /^ERR (\S+) ?(.*)$/.exec(line);
  return m ? { ok: false, code: m[1], message: m[2] } : { ok: true, value: line };
}

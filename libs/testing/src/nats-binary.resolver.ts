import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { NatsServerNotFoundError } from './errors.js';
import { NATS_SERVER_BIN_ENV } from './nats-server.options.js';

/**
 * Resolves the nats-server binary to an absolute executable path, failing fast with a typed error that says
 * how to install it. A name without a slash is looked up on PATH, like a shell would.
 */
export function resolveNatsServerBinary(binary?: string, env: NodeJS.ProcessEnv = process.env): string {
  const wanted = binary ?? env[NATS_SERVER_BIN_ENV] ?? 'nats-server';
  if (isAbsolute(wanted) || wanted.includes('/')) {
    if (isExecutableFile(wanted)) return wanted;
    throw new NatsServerNotFoundError(wanted);
  }
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, wanted);
    if (isExecutableFile(candidate)) return candidate;
  }
  throw new NatsServerNotFoundError(wanted);
}

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode } from '@wanmig/protocol';
import { HypervisorError } from '../errors.js';

const GUEST_MAIN = 'sim-guest.main.js';

/**
 * The built guest program. From the compiled driver it is the sibling file; from sources (vitest)
 * it is under the repository's dist/, found by walking up to package.json: the guest always runs built.
 */
export function simGuestEntry(): string {
  const here = fileURLToPath(import.meta.url);
  const sibling = join(dirname(here), GUEST_MAIN);
  if (here.endsWith('.js') && existsSync(sibling)) return sibling;
  let dir = dirname(here);
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new HypervisorError(ErrorCode.Unavailable, 'cannot find the wanmig repository root');
    dir = up;
  }
  const entry = join(dir, 'dist', 'libs', 'hypervisor', 'src', 'sim', GUEST_MAIN);
  if (!existsSync(entry)) {
    throw new HypervisorError(ErrorCode.Unavailable, `${entry} is missing: build first (npm run build)`);
  }
  return entry;
}

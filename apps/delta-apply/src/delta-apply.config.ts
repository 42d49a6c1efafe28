import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { IsInt, IsNotEmpty, IsString, Matches, Max, Min } from 'class-validator';
import { DEFAULT_SIM_RUNTIME_DIR } from '@wanmig/hypervisor';
import { SITE_PATTERN, ValidationError } from '@wanmig/protocol';
import { loadConfig, type EnvSource } from '@wanmig/service';

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
export const DEFAULT_DATA_DIR = '/var/lib/wanmig/delta-apply';
/** The present map is rewritten at most this often (it is only a hint for resume, see present-map.store.ts). */
export const DEFAULT_PRESENT_MAP_INTERVAL_MS = 1000;

/**
 * delta-apply's configuration, validated once at boot: `WANMIG_NATS_URL`, `WANMIG_SITE`,
 * `WANMIG_DATA_DIR`, `WANMIG_PRESENT_MAP_INTERVAL_MS`, `WANMIG_SIM_RUNTIME_DIR`. The site has no default: serving another
 * site's subjects by accident would be worse than not starting.
 */
export class DeltaApplyConfig {
  @IsString()
  @IsNotEmpty()
  natsUrl: string = DEFAULT_NATS_URL;

  @Matches(SITE_PATTERN, { message: 'required (WANMIG_SITE or --site): lower-case letters, digits and dashes' })
  site: string = '';

  @IsString()
  @IsNotEmpty()
  dataDir: string = DEFAULT_DATA_DIR;

  @IsInt()
  @Min(0)
  @Max(60_000)
  presentMapIntervalMs: number = DEFAULT_PRESENT_MAP_INTERVAL_MS;

  /**
   * Where the sim driver keeps the control sockets and runtime info of the VMs it starts; destination QEMUs keep
   * their sockets and logs in `qemu/<migrationId>/` under it.
   */
  @IsString()
  @IsNotEmpty()
  simRuntimeDir: string = DEFAULT_SIM_RUNTIME_DIR;
}

export const DELTA_APPLY_USAGE = `usage: delta-apply [--nats URL] [--site NAME] [--data-dir DIR] [--sim-runtime-dir DIR]

Destination side of wanmig's migrations: receives disk streams into local images, memory
pages and device state into RAM files, and resumes the migrated VM.
Flags override the environment: WANMIG_NATS_URL, WANMIG_SITE, WANMIG_DATA_DIR,
WANMIG_SIM_RUNTIME_DIR (and WANMIG_PRESENT_MAP_INTERVAL_MS).
`;

/** Command-line flags and the environment variable each one overrides. */
const FLAG_ENV = {
  nats: 'WANMIG_NATS_URL',
  site: 'WANMIG_SITE',
  'data-dir': 'WANMIG_DATA_DIR',
  'sim-runtime-dir': 'WANMIG_SIM_RUNTIME_DIR',
} as const;

export interface ParsedCommandLine {
  help: boolean;
  config?: DeltaApplyConfig;
}

/**
 * Reads the flags, lays them over the environment and validates the result once. A bad flag or
 * value throws ValidationError naming every bad key; `dataDir` and `simRuntimeDir` come back absolute.
 */
export function resolveDeltaApplyConfig(argv: string[], env: EnvSource = process.env): ParsedCommandLine {
  let values: Partial<Record<keyof typeof FLAG_ENV | 'help', string | boolean>>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        nats: { type: 'string' },
        site: { type: 'string' },
        'data-dir': { type: 'string' },
        'sim-runtime-dir': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new ValidationError([err instanceof Error ? err.message : String(err)], 'command line');
  }
  if (values.help === true) return { help: true };
  const merged: EnvSource = { ...env };
  for (const [flag, key] of Object.entries(FLAG_ENV)) {
    const value = values[flag as keyof typeof FLAG_ENV];
    if (typeof value === 'string') merged[key] = value;
  }
  const config = loadConfig(DeltaApplyConfig, merged);
  config.dataDir = resolve(config.dataDir);
  config.simRuntimeDir = resolve(config.simRuntimeDir);
  return { help: false, config };
}

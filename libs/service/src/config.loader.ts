import { validateDto } from '@wanmig/protocol';

export type EnvSource = Record<string, string | undefined>;

/**
 * Builds a service config DTO once, at boot, from environment variables: `WANMIG_DATA_DIR` fills
 * `dataDir`. Values that are absent keep the DTO's named defaults (never erased by undefined);
 * numbers and booleans are parsed; any bad key fails the start with the whole list.
 */
export function loadConfig<T extends object>(dto: new () => T, env: EnvSource = process.env, prefix = 'WANMIG_'): T {
  const defaults = new dto() as Record<string, unknown>;
  const plain: Record<string, unknown> = {};
  for (const key of Object.keys(defaults)) {
    const raw = env[prefix + key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()];
    if (raw === undefined || raw === '') continue;
    const fallback = defaults[key];
    plain[key] = typeof fallback === 'number' ? Number(raw) : typeof fallback === 'boolean' ? raw === 'true' : raw;
  }
  return validateDto(dto, plain, `${dto.name} (environment ${prefix}*)`);
}

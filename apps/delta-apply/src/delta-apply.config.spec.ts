import { ValidationError } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { DEFAULT_DATA_DIR, DEFAULT_NATS_URL, resolveDeltaApplyConfig } from './delta-apply.config.js';

describe('delta-apply config', () => {
  it('reads the environment and keeps named defaults', () => {
    const { config } = resolveDeltaApplyConfig([], { WANMIG_SITE: 'site-b' });
    expect(config).toMatchObject({ site: 'site-b', natsUrl: DEFAULT_NATS_URL, dataDir: DEFAULT_DATA_DIR });
  });

  it('lets flags override the environment', () => {
    const { config } = resolveDeltaApplyConfig(
      ['--site', 'site-c', '--nats', 'nats://10.0.0.1:4333', '--data-dir', 'rel', '--sim-runtime-dir', 'guests'],
      {
        WANMIG_SITE: 'site-b',
        WANMIG_NATS_URL: 'nats://127.0.0.1:1',
        WANMIG_DATA_DIR: '/srv/x',
      },
    );
    expect(config?.site).toBe('site-c');
    expect(config?.natsUrl).toBe('nats://10.0.0.1:4333');
    expect(config?.dataDir).toMatch(/^\/.*\/rel$/);
    expect(config?.simRuntimeDir).toMatch(/^\/.*\/guests$/);
  });

  it('fails with every bad key, and on unknown flags', () => {
    expect(() => resolveDeltaApplyConfig([], {})).toThrow(/site: required/);
    expect(() => resolveDeltaApplyConfig(['--site', 'Site_B'], { WANMIG_PRESENT_MAP_INTERVAL_MS: '-1' })).toThrow(
      /site.*presentMapIntervalMs|presentMapIntervalMs.*site/s,
    );
    expect(() => resolveDeltaApplyConfig(['--bogus'], { WANMIG_SITE: 'a' })).toThrow(ValidationError);
  });

  it('answers --help without validating', () => {
    expect(resolveDeltaApplyConfig(['--help'], {})).toEqual({ help: true });
  });
});

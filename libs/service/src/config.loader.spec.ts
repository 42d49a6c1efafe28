import { IsInt, IsString, Min } from 'class-validator';
import { ValidationError } from '@wanmig/protocol';
import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.loader.js';

const DEFAULT_PORT = 4222;

class SampleConfig {
  @IsString()
  dataDir: string = '/var/lib/wanmig';

  @IsInt()
  @Min(1)
  natsPort: number = DEFAULT_PORT;
}

describe('loadConfig', () => {
  it('keeps named defaults for absent keys and parses numbers', () => {
    const config = loadConfig(SampleConfig, { WANMIG_NATS_PORT: '5222' });
    expect(config).toMatchObject({ dataDir: '/var/lib/wanmig', natsPort: 5222 });
    expect(loadConfig(SampleConfig, { WANMIG_DATA_DIR: '' }).dataDir).toBe('/var/lib/wanmig');
  });

  it('fails with the list of bad keys', () => {
    expect(() => loadConfig(SampleConfig, { WANMIG_NATS_PORT: 'zero' })).toThrow(ValidationError);
    expect(() => loadConfig(SampleConfig, { WANMIG_NATS_PORT: 'zero' })).toThrow(/natsPort/);
  });
});

import { describe, expect, it } from 'vitest';
import { renderNatsConfig } from './nats-config.renderer.js';

describe('renderNatsConfig', () => {
  it('renders scalars, blocks and arrays in nats-server syntax and skips undefined keys', () => {
    const text = renderNatsConfig({
      server_name: 'site-a',
      max_payload: 8388608,
      debug: false,
      skipped: undefined,
      jetstream: { store_dir: '/tmp/a "b"', domain: undefined },
      leafnodes: { remotes: [{ urls: ['nats-leaf://127.0.0.1:1'] }] },
    });
    expect(text).toBe(
      [
        'server_name: "site-a"',
        'max_payload: 8388608',
        'debug: false',
        'jetstream {',
        '  store_dir: "/tmp/a \\"b\\""',
        '}',
        'leafnodes {',
        '  remotes: [',
        '    {',
        '      urls: [',
        '        "nats-leaf://127.0.0.1:1"',
        '      ]',
        '    }',
        '  ]',
        '}',
        '',
      ].join('\n'),
    );
  });

  it('refuses non-finite numbers', () => {
    expect(() => renderNatsConfig({ max_payload: Number.POSITIVE_INFINITY })).toThrow(RangeError);
  });
});

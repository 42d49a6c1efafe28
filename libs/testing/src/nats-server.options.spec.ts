import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_PAYLOAD, buildNatsConfig } from './nats-server.options.js';

describe('buildNatsConfig', () => {
  it('enables JetStream in the temp dir and monitoring on loopback by default', () => {
    const config = buildNatsConfig({}, 'n1', '127.0.0.1', { client: 4222, http: 8222 }, '/tmp/x');
    expect(config).toMatchObject({
      server_name: 'n1',
      listen: '127.0.0.1:4222',
      http: '127.0.0.1:8222',
      max_payload: DEFAULT_MAX_PAYLOAD,
      jetstream: { store_dir: '/tmp/x' },
    });
    expect(config.leafnodes).toBeUndefined();
  });

  it('renders a leafnode listener with an advertised address and remotes with a fast reconnect', () => {
    const hub = buildNatsConfig(
      { jetstream: { domain: 'site-a' }, leafnode: { listen: true, advertise: '127.0.0.1:9' } },
      'site-a',
      '127.0.0.1',
      { client: 1, leafnode: 7422 },
      '/tmp/a',
    );
    expect(hub.jetstream).toMatchObject({ domain: 'site-a' });
    expect(hub.leafnodes).toMatchObject({ listen: '127.0.0.1:7422', advertise: '127.0.0.1:9', reconnect: 1 });
    const leaf = buildNatsConfig(
      { leafnode: { remotes: [{ url: 'nats-leaf://127.0.0.1:9' }], reconnectSeconds: 2 } },
      'site-b',
      '127.0.0.1',
      { client: 2 },
      '/tmp/b',
    );
    expect(leaf.leafnodes).toMatchObject({ reconnect: 2, remotes: [{ urls: ['nats-leaf://127.0.0.1:9'] }] });
  });

  it('can disable JetStream, raise max_pending with max_payload and let extraConfig win', () => {
    const config = buildNatsConfig(
      { jetstream: false, maxPayload: 64 * 1024 * 1024, extraConfig: { listen: 'x' } },
      'n',
      '127.0.0.1',
      { client: 1 },
      '/tmp/n',
    );
    expect(config.jetstream).toBeUndefined();
    expect(config.max_pending).toBe(128 * 1024 * 1024);
    expect(config.listen).toBe('x');
  });
});

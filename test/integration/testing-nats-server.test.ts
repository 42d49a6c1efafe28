import { existsSync } from 'node:fs';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { describe, expect, it } from 'vitest';
import { NatsServerNotFoundError, NatsServerStartError, startNatsServer } from '@wanmig/testing';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('startNatsServer', () => {
  it('starts on random loopback ports with JetStream, and stop() kills it and removes its temp dir', async () => {
    const server = await startNatsServer({ name: 'launcher-basic', leafnode: { listen: true } });
    try {
      expect(server.url).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
      expect(server.leafnodePort).toBeGreaterThan(0);
      expect(isAlive(server.pid)).toBe(true);
      expect(existsSync(server.configFile)).toBe(true);
      const health = await fetch(`${server.monitorUrl}/healthz`);
      expect(health.ok).toBe(true);
      const nc = await connect({ servers: server.url });
      expect(nc.info?.server_name).toBe('launcher-basic');
      expect(nc.info?.max_payload).toBe(8 * 1024 * 1024);
      expect(nc.info?.jetstream).toBe(true);
      await nc.close();
    } finally {
      await server.stop();
    }
    expect(server.running).toBe(false);
    expect(isAlive(server.pid)).toBe(false);
    expect(existsSync(server.dir)).toBe(false);
    await server.stop(); // idempotent
  });

  it('restart() keeps ports and JetStream state', async () => {
    const server = await startNatsServer({ jetstream: { domain: 'r' } });
    try {
      let nc = await connect({ servers: server.url });
      await (await jetstreamManager(nc)).streams.add({ name: 'KEEP', subjects: ['keep.>'] });
      await nc.close();
      const { pid, port } = server;
      await server.restart();
      expect(server.pid).not.toBe(pid);
      expect(server.port).toBe(port);
      nc = await connect({ servers: server.url });
      const info = await (await jetstreamManager(nc)).streams.info('KEEP');
      expect(info.config.name).toBe('KEEP');
      await nc.close();
    } finally {
      await server.stop();
    }
  });

  it('fails fast with a typed error when the binary is missing', async () => {
    const attempt = startNatsServer({ binary: '/nonexistent/bin/nats-server' });
    await expect(attempt).rejects.toBeInstanceOf(NatsServerNotFoundError);
    await expect(attempt).rejects.toThrow(/bash deploy\/bootstrap\.sh/);
  });

  it('reports a server that exits during start with the tail of its log, and cleans up', async () => {
    const error = await startNatsServer({ name: 'bad-config', extraConfig: { no_such_option: 1 } }).catch(
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(NatsServerStartError);
    const startError = error as NatsServerStartError;
    expect(startError.serverName).toBe('bad-config');
    expect(startError.logTail).toMatch(/no_such_option/);
    expect(startError.message).toMatch(/log tail/);
  });
});

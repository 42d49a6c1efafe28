import { createServer, type Server } from 'node:net';

export const LOOPBACK_HOST = '127.0.0.1';

/**
 * Returns `count` distinct TCP ports that were free on `host` a moment ago. All probe listeners are held open
 * together so the ports differ; there is still a small race with other processes, which the launcher covers by
 * retrying on "address already in use".
 */
export async function getFreePorts(count: number, host = LOOPBACK_HOST): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      ports.push(await listenOnRandomPort(server, host));
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

export async function getFreePort(host = LOOPBACK_HOST): Promise<number> {
  const [port] = await getFreePorts(1, host);
  return port;
}

function listenOnRandomPort(server: Server, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      if (address === null || typeof address === 'string') reject(new Error('unexpected server address'));
      else resolve(address.port);
    });
  });
}

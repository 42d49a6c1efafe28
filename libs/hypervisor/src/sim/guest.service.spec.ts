import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { GuestService } from './guest.service.js';
import { ServiceCommand, type ServiceRequest } from './service.protocol.js';

function client(address: string): Promise<{ socket: Socket; lines: string[]; next: () => Promise<string> }> {
  const [host, port] = address.split(':');
  const socket = connect({ host, port: Number(port) });
  const lines: string[] = [];
  const waiters: ((line: string) => void)[] = [];
  let partial = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop()!;
    for (const line of parts) {
      const waiter = waiters.shift();
      if (waiter) waiter(line);
      else lines.push(line);
    }
  });
  const next = () => (lines.length > 0 ? Promise.resolve(lines.shift()!) : new Promise<string>((r) => waiters.push(r)));
  return new Promise((resolve) => socket.once('connect', () => resolve({ socket, lines, next })));
}

describe('guest service', () => {
  let service: GuestService | undefined;
  afterEach(async () => {
    await service?.close();
  });

  it('holds requests while held and answers them, in order, before open() resolves', async () => {
    let counter = 5;
    service = new GuestService(
      (req: ServiceRequest) => (req.command === ServiceCommand.Ping ? `PONG ${counter}` : 'x'),
      () => {},
    );
    const c = await client(await service.listen(0));
    c.socket.write('PING\nCOUNTER\n');
    await new Promise((r) => setTimeout(r, 100));
    expect(c.lines).toEqual([]);
    await service.open();
    counter = 6;
    expect([await c.next(), await c.next()]).toEqual(['PONG 5', 'x']);
    c.socket.write('PING\n');
    expect(await c.next()).toBe('PONG 6');
    c.socket.destroy();
  });

  it('answers bad requests with ERR and keeps the connection', async () => {
    service = new GuestService(
      () => 'ok',
      () => {},
    );
    const c = await client(await service.listen(0));
    await service.open();
    c.socket.write('NOPE\nPING\nQUIT\n');
    expect(await c.next()).toBe('ERR INVALID_REQUEST unknown command "NOPE"');
    expect(await c.next()).toBe('ok');
    expect(await c.next()).toBe('BYE');
  });

  it('hides internal failures behind a generic error and logs them', async () => {
    const logged: string[] = [];
    service = new GuestService(
      () => {
        throw new Error('boom');
      },
      (l) => logged.push(l),
    );
    const c = await client(await service.listen(0));
    await service.open();
    c.socket.write('PING\n');
    expect(await c.next()).toBe('ERR INTERNAL internal error (see the guest log)');
    expect(logged[0]).toMatch(/boom/);
    c.socket.destroy();
  });
});

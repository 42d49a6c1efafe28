import { NetBedError } from './net.errors.js';
import type { NetRole } from './net-bed.plan.js';
import type { NetSpawner } from './tcp-probe.launcher.js';
import type { NetnsProcess } from './netns.process.js';

/**
 * A door into a namespace for a client that runs on the host: a unix socket (the filesystem crosses namespaces) whose
 * every connection is made again, as TCP, from inside the namespace. One connection on the socket is one TCP
 * connection from the namespace, for as long as both stay open: a client on the host that holds one keeps that TCP
 * connection, as a client inside the namespace would. Exits by itself after `lifetimeMs`.
 */
export const NS_PORT_SCRIPT = String.raw`
const net = require('node:net');
const fs = require('node:fs');
const [path, host, port, lifetime] = process.argv.slice(1);
try { fs.rmSync(path, { force: true }); } catch {}
let accepted = 0;
const server = net.createServer({ allowHalfOpen: true }, (inside) => {
  accepted++;
  const outside = net.connect({ host, port: Number(port), allowHalfOpen: true });
  outside.setNoDelay(true);
  const cut = () => { inside.destroy(); outside.destroy(); };
  inside.on('error', cut);
  outside.on('error', cut);
  inside.on('close', cut);
  outside.on('close', cut);
  inside.pipe(outside);
  outside.pipe(inside);
});
server.listen(path, () => process.stdout.write('listening ' + path + '\n'));
setTimeout(() => {
  process.stdout.write('accepted ' + accepted + '\n');
  try { fs.rmSync(path, { force: true }); } catch {}
  process.exit(0);
}, Number(lifetime)).unref();
process.on('SIGTERM', () => { try { fs.rmSync(path, { force: true }); } catch {} process.exit(0); });
`;

export interface NsPortOptions {
  /** Unix socket path the host side connects to. */
  path: string;
  /** Where each connection goes, from inside the namespace. */
  host: string;
  port: number;
  /** It exits by itself after this long. */
  lifetimeMs: number;
}

/** Starts the door in `role`'s namespace and waits until its socket listens. Stop it with `stop()`. */
export async function openNsPort(bed: NetSpawner, role: NetRole, options: NsPortOptions): Promise<NetnsProcess> {
  if (options.path.length > 100) throw new NetBedError(`unix socket path too long: ${options.path}`);
  const proc = bed.spawn(role, [
    process.execPath,
    '-e',
    NS_PORT_SCRIPT,
    options.path,
    options.host,
    String(options.port),
    String(options.lifetimeMs),
  ]);
  try {
    await proc.waitForOutput((out) => out.includes('listening '), {
      what: `a door into ${role} to ${options.host}:${options.port}`,
      timeoutMs: 5_000,
    });
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return proc;
}

/**
 * The relay's forwarder as its own process, for a listener inside a network namespace (Node cannot enter one, so the
 * service starts `ip netns exec <ns> node forwarder.child.js '<config>'`). Reports on stdout as JSON lines (see
 * forwarder.protocol.ts), takes `drain` / `stop` / `retarget` on stdin, and exits when its stdin closes: it never outlives the
 * service that started it.
 */
import {
  jsonLines,
  type ForwarderChildConfig,
  type ForwarderCommand,
  type ForwarderReport,
} from './forwarder.protocol.js';
import { TcpForwarder, type ForwarderChange } from './tcp.forwarder.js';

function report(message: ForwarderReport): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

async function main(): Promise<void> {
  const config = JSON.parse(process.argv[2] ?? '') as ForwarderChildConfig;
  let forwarder: TcpForwarder | undefined;
  let timer: NodeJS.Timeout | undefined;
  const flush = () => {
    timer = undefined;
    if (forwarder) report({ type: 'counters', ...forwarder.counters });
  };
  const onChange = (change: ForwarderChange) => {
    if (change === 'connection') {
      if (timer) clearTimeout(timer);
      flush();
    } else {
      timer ??= setTimeout(flush, config.reportMs);
    }
  };
  let exiting = false;
  const exit = (code: number) => {
    if (exiting) return;
    exiting = true;
    if (timer) clearTimeout(timer);
    void (forwarder?.destroy() ?? Promise.resolve()).then(() => {
      if (forwarder) report({ type: 'counters', ...forwarder.counters });
      process.stdout.write('', () => process.exit(code));
    });
  };
  process.on('SIGTERM', () => exit(0));
  process.on('SIGINT', () => exit(0));
  process.stdin.on('end', () => exit(0));
  process.stdin.on('error', () => exit(0));
  process.stdin.on(
    'data',
    jsonLines<ForwarderCommand>((command) => {
      if (command.type === 'drain') forwarder?.stopAccepting();
      else if (command.type === 'stop') exit(0);
      else if (command.type === 'retarget') {
        forwarder?.retarget(command.target, command.relay);
        report({ type: 'retargeted' });
      } else if (command.type === 'flows') report({ type: 'flows', flows: forwarder?.flows() ?? [] });
    }),
  );
  try {
    forwarder = await TcpForwarder.listen(config, onChange);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    report({ type: 'error', code: e.code, message: e.message });
    process.stdout.write('', () => process.exit(1));
    return;
  }
  report({ type: 'listening', address: forwarder.address, addresses: forwarder.addresses, pid: process.pid });
}

main().catch((err: unknown) => {
  report({ type: 'error', message: err instanceof Error ? err.message : String(err) });
  process.exit(1);
});

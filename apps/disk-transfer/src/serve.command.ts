import { parseArgs } from 'node:util';
import { parseSize } from '@wanmig/service';
import { DiskExport, ExportRole } from './disk.export.js';

/** A mistake in the command line: one line on stderr, exit code 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export const DISK_SERVE_USAGE = `usage: wanmig disk serve --image PATH (--socket PATH | --port N) [--size SIZE] [--role serve|mirror-target]

Serves a raw image over NBD until SIGTERM or Ctrl-C, tracking every write the way a migration
does. With --size, a sparse image of that size is created when PATH does not exist.
`;

/** `wanmig disk serve` (runs here): the serve role by hand, so NBD tools can be pointed at it. */
export async function serveCommand(argv: string[], out: (line: string) => void): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      image: { type: 'string' },
      socket: { type: 'string' },
      port: { type: 'string' },
      size: { type: 'string' },
      role: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    out(DISK_SERVE_USAGE);
    return 0;
  }
  if (!values.image) throw new UsageError('--image PATH is required');
  if ((values.socket === undefined) === (values.port === undefined)) {
    throw new UsageError('give exactly one of --socket PATH or --port N');
  }
  const port = values.port === undefined ? undefined : Number(values.port);
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new UsageError(`--port must be 0-65535, got ${values.port}`);
  }
  const role = values.role ?? ExportRole.Serve;
  if (role !== ExportRole.Serve && role !== ExportRole.MirrorTarget) {
    throw new UsageError('--role is serve or mirror-target');
  }
  const disk = await DiskExport.open({
    imagePath: values.image,
    role,
    createSize: values.size === undefined ? undefined : parseSize(values.size, '--size'),
    listen: values.socket !== undefined ? { path: values.socket } : { host: '127.0.0.1', port },
  });
  out(`serving ${values.image} (${disk.size} bytes, ${role}) at ${disk.address.uri}`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await disk.close();
  const dirty = disk.dirty.count * disk.dirty.blockSize;
  out(`stopped; ${dirty} bytes written while served`);
  return 0;
}

import { type NbdConnectTarget } from '@wanmig/nbd';

export interface NbdDiskAddress {
  target: NbdConnectTarget;
  exportName: string;
}

const NBD_DEFAULT_PORT = 10809;

/**
 * Reads the NBD URIs of the NBD URI spec that the guest supports: `nbd://host[:port][/export]`
 * and `nbd+unix:///export?socket=/path`. Returns undefined and a reason for anything else.
 */
export function parseNbdUri(uri: string): NbdDiskAddress | { error: string } {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return { error: `${JSON.stringify(uri)} is not a URI` };
  }
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (url.protocol === 'nbd:') {
    if (!url.hostname) return { error: `${uri}: nbd:// needs a host` };
    const port = url.port ? Number(url.port) : NBD_DEFAULT_PORT;
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    return { target: { host, port }, exportName };
  }
  if (url.protocol === 'nbd+unix:') {
    if (url.hostname) return { error: `${uri}: nbd+unix:// takes no host (nbd+unix:///export?socket=PATH)` };
    const socket = url.searchParams.get('socket');
    if (!socket) return { error: `${uri}: nbd+unix:// needs ?socket=PATH` };
    return { target: { path: socket }, exportName };
  }
  return { error: `${uri}: only nbd:// and nbd+unix:// disks are supported` };
}

import { describe, expect, it } from 'vitest';
import { ADDRESS_NOT_FOUND, ipCommand, NAMESPACE_NOT_FOUND } from './ip.commands.js';
import { NetBedError } from './net.errors.js';
import { parseNamespaceList, parsePids, parseRouteVia } from './netns.runner.js';

describe('ip commands', () => {
  it('creates a veth pair inside one namespace with its peer straight in the other', () => {
    expect(ipCommand.addVethPair('wm1-r', 'to-siteA', 'wm1-a', 'eth0')).toEqual([
      '-n',
      'wm1-r',
      'link',
      'add',
      'to-siteA',
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      'wm1-a',
    ]);
  });

  it('moves a host route with one replace', () => {
    expect(ipCommand.replaceHostRoute({ netns: 'wm1-r', address: '10.200.100.1', via: '10.200.2.2' })).toEqual([
      '-n',
      'wm1-r',
      'route',
      'replace',
      '10.200.100.1/32',
      'via',
      '10.200.2.2',
    ]);
    expect(() => ipCommand.replaceHostRoute({ netns: 'r', address: '10.200.100.1/32', via: '10.0.0.1' })).toThrow(
      NetBedError,
    );
    expect(() => ipCommand.replaceHostRoute({ netns: 'r', address: '10.200.100.1', via: 'router' })).toThrow(
      NetBedError,
    );
  });

  it('acts inside namespaces, never on the host', () => {
    const inNamespace = [
      ipCommand.linkUp('n', 'lo'),
      ipCommand.addBridge('n', 'br0'),
      ipCommand.replaceAddress('n', 'lo', '10.200.100.1/32'),
      ipCommand.deleteAddress('n', 'lo', '10.200.100.1/32'),
      ipCommand.replaceDefaultRoute('n', '10.200.0.1'),
      ipCommand.routeGet('n', '10.200.100.1'),
    ];
    for (const argv of inNamespace) expect(argv.slice(0, 2)).toEqual(['-n', 'n']);
    expect(ipCommand.exec('n', ['node', '-e', 'x'])).toEqual(['netns', 'exec', 'n', 'node', '-e', 'x']);
    expect(ipCommand.enableForwarding('n').slice(0, 3)).toEqual(['netns', 'exec', 'n']);
  });

  it('recognises the errors that mean "already gone"', () => {
    expect(ADDRESS_NOT_FOUND.test('Error: ipv4: Address not found.')).toBe(true);
    expect(NAMESPACE_NOT_FOUND.test('Cannot remove namespace file "/run/netns/x": No such file or directory')).toBe(
      true,
    );
  });

  it('parses namespace lists, pid lists and the gateway of a route', () => {
    expect(parseNamespaceList('wm1-b (id: 3)\nwm1-a\n\n')).toEqual(['wm1-b', 'wm1-a']);
    expect(parsePids('123\n456\n')).toEqual([123, 456]);
    expect(parsePids('')).toEqual([]);
    expect(parseRouteVia('10.200.100.1 via 10.200.2.2 dev to-siteB src 10.200.2.1 uid 0\n    cache\n')).toBe(
      '10.200.2.2',
    );
    expect(parseRouteVia('10.200.1.2 dev to-siteA src 10.200.1.1 uid 0')).toBeUndefined();
  });
});

import { describe, expect, it } from 'vitest';
import {
  FIRST_BED_OCTET,
  isBedPrefix,
  MAX_IFNAME_LENGTH,
  NET_ROLES,
  newBedPrefix,
  nextHop,
  octetForPrefix,
  planNetBed,
  vmAddress,
} from './net-bed.plan.js';
import { NetBedError } from './net.errors.js';

describe('net bed plan', () => {
  it('makes prefixes of wm and six hex digits, different each time', () => {
    expect(newBedPrefix(Buffer.from([0x0a, 0x1b, 0x2c]))).toBe('wm0a1b2c');
    const many = new Set(Array.from({ length: 50 }, () => newBedPrefix()));
    for (const prefix of many) expect(isBedPrefix(prefix)).toBe(true);
    expect(many.size).toBeGreaterThan(45);
    expect(isBedPrefix('wm0a1b2')).toBe(false);
    expect(isBedPrefix('xx0a1b2c')).toBe(false);
  });

  it('names one namespace per role after the prefix, short enough for interface-name limits', () => {
    const plan = planNetBed('wm0a1b2c');
    expect(plan.namespaces).toEqual({
      client: 'wm0a1b2c-c',
      router: 'wm0a1b2c-r',
      siteA: 'wm0a1b2c-a',
      siteB: 'wm0a1b2c-b',
    });
    for (const role of NET_ROLES) expect(plan.namespaces[role].length).toBeLessThanOrEqual(MAX_IFNAME_LENGTH);
    for (const link of Object.values(plan.links)) {
      expect(link.routerIf.length).toBeLessThanOrEqual(MAX_IFNAME_LENGTH);
      expect(link.peerIf.length).toBeLessThanOrEqual(MAX_IFNAME_LENGTH);
    }
  });

  it('puts each link on its own /30 and the VM range on none of them', () => {
    const plan = planNetBed('wm0a1b2c', 210);
    expect(plan.links.client).toMatchObject({
      routerAddress: '10.210.0.1',
      peerAddress: '10.210.0.2',
      prefixLength: 30,
    });
    expect(plan.links.siteA).toMatchObject({
      routerAddress: '10.210.1.1',
      peerAddress: '10.210.1.2',
      routerIf: 'to-siteA',
    });
    expect(plan.links.siteB).toMatchObject({ routerAddress: '10.210.2.1', peerAddress: '10.210.2.2', peerIf: 'eth0' });
    expect(plan.vmRange).toBe('10.210.100.0/24');
    const linkNets = Object.values(plan.links).map((l) => l.routerAddress.split('.').slice(0, 3).join('.'));
    expect(new Set(linkNets).size).toBe(3);
    expect(linkNets).not.toContain('10.210.100');
  });

  it('derives the second octet from the prefix, inside 200..249', () => {
    expect(octetForPrefix('wm000000')).toBe(FIRST_BED_OCTET);
    expect(octetForPrefix('wm310000')).toBe(FIRST_BED_OCTET + (0x31 % 50));
    for (let i = 0; i < 100; i++) {
      const octet = octetForPrefix(newBedPrefix());
      expect(octet).toBeGreaterThanOrEqual(200);
      expect(octet).toBeLessThanOrEqual(249);
    }
    expect(planNetBed('wm310000').octet).toBe(octetForPrefix('wm310000'));
  });

  it('hands out VM addresses 1..254 and the sites as next hops', () => {
    const plan = planNetBed('wm0a1b2c', 201);
    expect(vmAddress(plan, 1)).toBe('10.201.100.1');
    expect(vmAddress(plan, 254)).toBe('10.201.100.254');
    expect(() => vmAddress(plan, 0)).toThrow(NetBedError);
    expect(() => vmAddress(plan, 255)).toThrow(NetBedError);
    expect(() => vmAddress(plan, 1.5)).toThrow(NetBedError);
    expect(nextHop(plan, 'siteA')).toBe('10.201.1.2');
    expect(nextHop(plan, 'siteB')).toBe('10.201.2.2');
  });

  it('refuses a bad prefix or octet', () => {
    expect(() => planNetBed('wm-bad')).toThrow(/wm<6 hex digits>/);
    expect(() => planNetBed('wm0a1b2c', 256)).toThrow(NetBedError);
  });
});

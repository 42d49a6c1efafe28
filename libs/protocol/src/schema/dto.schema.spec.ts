import 'reflect-metadata';
import {
  ArrayMaxSize,
  IsArray,
  IsInt,
  IsIP,
  IsOptional,
  IsString,
  IsUUID,
  Matches,
  ValidateIf,
  ValidateNested,
} from 'class-validator';
import { describe, expect, it } from 'vitest';
import { PrepareDiskRequest } from '../control/disk.dto.js';
import { ValidationError } from '../errors.js';
import { NestedDto } from '../nested-dto.decorator.js';
import { validateDto } from '../validate.js';
import { API_REQUEST_DTOS, API_SCHEMAS } from './api.schemas.js';
import { dtoSchema } from './dto.schema.js';
import { SchemaGenerationError } from './schema.errors.js';
import { schemaValidator } from './schema.spec-helper.js';

const MIGRATION_ID = '0b6f1c1e-4d2a-4c55-9a7e-2f0d8e1b3c4a';
const MOVE = { migrationId: MIGRATION_ID, vmId: 'vm-1', addresses: ['10.0.0.5'], fromSite: 'site-a', toSite: 'site-b' };
const RELAY = {
  migrationId: MIGRATION_ID,
  listen: { host: '127.0.0.1', port: 0 },
  target: { host: '10.0.0.5', port: 80 },
  maxMs: 60_000,
};

const NIC = {
  vmId: 'shop',
  addresses: ['10.200.100.1'],
  ports: [7000],
  socket: '/run/wanmig/shop.sock',
  framing: 'lines',
};
// Items of `tunnels` that are objects but wrong are refused by the schema and by the service, not by validateDto.
const VM_RELAY = {
  vmId: 'shop',
  tunnelHost: '10.200.2.2',
  tunnels: [{ port: 7000, tunnelPort: 40999 }],
  maxMs: 60_000,
};

/** Bodies each DTO must accept (true) or refuse (false): validateDto and the schema must agree on every one. */
const CASES: { [K in keyof typeof API_REQUEST_DTOS]: [unknown, boolean][] } = {
  CreateMigrationRequest: [
    [{ vmId: 'vm-1', toSite: 'site-b' }, true],
    [{ vmId: 'vm_1', toSite: 'b', bandwidthBps: 0, downtimeMs: 600_000, policy: 'kvm', verify: false }, true],
    [{ vmId: 'vm-1', toSite: 'site-b', bandwidthBps: null }, true],
    [{ vmId: 'vm-1' }, false],
    [{ toSite: 'site-b' }, false],
    [{ vmId: 'a b', toSite: 'site-b' }, false],
    [{ vmId: 'x'.repeat(65), toSite: 'site-b' }, false],
    [{ vmId: 'vm-1', toSite: 'Site-B' }, false],
    [{ vmId: 'vm-1', toSite: '-site' }, false],
    [{ vmId: 42, toSite: 'site-b' }, false],
    [{ vmId: 'vm-1', toSite: 'site-b', bandwidthBps: -1 }, false],
    [{ vmId: 'vm-1', toSite: 'site-b', bandwidthBps: 1.5 }, false],
    [{ vmId: 'vm-1', toSite: 'site-b', bandwidthBps: '100' }, false],
    [{ vmId: 'vm-1', toSite: 'site-b', downtimeMs: 0 }, false],
    [{ vmId: 'vm-1', toSite: 'site-b', downtimeMs: 600_001 }, false],
    [{ vmId: 'vm-1', toSite: 'site-b', downtimeMs: null }, false],
    [{ vmId: 'vm-1', toSite: 'site-b', policy: 'fast' }, false],
    [{ vmId: 'vm-1', toSite: 'site-b', verify: 'true' }, false],
    [{ vmId: 'vm-1', toSite: 'site-b', serviceDeadlineMs: 1000 }, true],
    [{ vmId: 'vm-1', toSite: 'site-b', serviceDeadlineMs: 999 }, false],
    [{ vmId: 'vm-1', toSite: 'site-b', serviceDeadlineMs: 3_600_001 }, false],
    [{ vmId: 'vm-1', toSite: 'site-b', extra: 1 }, false],
  ],
  MigrationRef: [
    [{ migrationId: MIGRATION_ID }, true],
    [{ migrationId: MIGRATION_ID.toUpperCase() }, true],
    [{ migrationId: '00000000-0000-0000-0000-000000000000' }, true],
    [{}, false],
    [{ migrationId: 'not-a-uuid' }, false],
    [{ migrationId: '0b6f1c1e-4d2a-9c55-9a7e-2f0d8e1b3c4a' }, false], // version 9 is no UUID version
    [{ migrationId: null }, false],
    [{ migrationId: MIGRATION_ID, vmId: 'vm-1' }, false],
  ],
  ListMigrationsRequest: [
    [{}, true],
    [{ unfinished: true, vmId: 'vm-1' }, true],
    [{ unfinished: null }, true],
    [{ unfinished: 'true' }, false],
    [{ vmId: '' }, false],
    [{ phase: 'PLANNED' }, false],
  ],
  CreateVmRequest: [
    [{ vmId: 'vm-1' }, true],
    [{ vmId: 'vm-1', ramBytes: 64 << 20, diskBytes: 2 ** 44, workload: 'db', seed: 2 ** 32 - 1 }, true],
    [{ vmId: 'vm-1', ramBytes: 63 << 20 }, false],
    [{ vmId: 'vm-1', ramBytes: 1024 }, false],
    [{ vmId: 'vm-1', diskBytes: 2 ** 44 + 1 }, false],
    [{ vmId: 'vm-1', workload: 'gaming' }, false],
    [{ vmId: 'vm-1', seed: 2 ** 32 }, false],
    [{ vmId: 'vm-1', seed: -1 }, false],
    [{ ramBytes: 1 << 20 }, false],
  ],
  ImportVmRequest: [
    [{ vmId: 'vm-1', qmpSocket: '/run/qemu/vm-1.qmp', diskNode: 'disk0' }, true],
    [{ vmId: 'vm-1', qmpSocket: `/${'s'.repeat(106)}`, diskNode: `d${'-'.repeat(30)}` }, true],
    [{ vmId: 'vm-1', qmpSocket: '/run/qemu/vm-1.qmp', diskNode: 'disk0', addresses: ['10.0.0.5'] }, true],
    [{ vmId: 'vm-1', qmpSocket: 'vm-1.qmp', diskNode: 'disk0' }, false],
    [{ vmId: 'vm-1', qmpSocket: `/${'s'.repeat(107)}`, diskNode: 'disk0' }, false],
    [{ vmId: 'vm-1', qmpSocket: '/run/qemu/\u00e9.qmp', diskNode: 'disk0' }, false],
    [{ vmId: 'vm-1', qmpSocket: '/run/qemu/vm-1.qmp', diskNode: '0disk' }, false],
    [{ vmId: 'vm-1', qmpSocket: '/run/qemu/vm-1.qmp', diskNode: `d${'x'.repeat(31)}` }, false],
    [{ vmId: 'vm-1', qmpSocket: '/run/qemu/vm-1.qmp' }, false],
    [{ vmId: 'vm-1', qmpSocket: '/run/qemu/vm-1.qmp', diskNode: 'disk0', addresses: [] }, false],
    [{ vmId: 'vm-1', qmpSocket: '/run/qemu/vm-1.qmp', diskNode: 'disk0', driver: 'qemu' }, false],
  ],
  VmRef: [
    [{ vmId: 'vm-1' }, true],
    [{ vmId: 'vm 1' }, false],
    [{}, false],
  ],
  OpenQemuRelayRequest: [
    [{ migrationId: MIGRATION_ID }, true],
    [{ migrationId: MIGRATION_ID, windowBytes: 4 << 20, bandwidthBps: 0 }, true],
    [{ migrationId: MIGRATION_ID, returnPath: true }, true],
    [{ migrationId: MIGRATION_ID, returnPath: 'yes' }, false],
    [{ migrationId: MIGRATION_ID, returnPath: 1 }, false],
    [{ migrationId: MIGRATION_ID, windowBytes: 1024 }, false],
    [{ migrationId: MIGRATION_ID, bandwidthBps: -1 }, false],
    [{ migrationId: MIGRATION_ID, toSite: 'site-b' }, false],
    [{}, false],
  ],
  StartQemuIncomingRequest: [
    [{ migrationId: MIGRATION_ID, ramMiB: 256, kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img' }, true],
    [
      {
        migrationId: MIGRATION_ID,
        diskPath: '/srv/wanmig/disk.img',
        ramMiB: 512,
        kernel: '/k',
        initrd: '/i',
        append: 'console=ttyS0 quiet panic=-1 wanmig.hot_mib=32',
        machine: 'pc',
        accel: 'kvm',
        cpus: 2,
        servicePort: 0,
        guestPort: 22,
        postcopy: true,
      },
      true,
    ],
    [{ migrationId: MIGRATION_ID, ramMiB: 256, kernel: '/k', initrd: '/i', postcopy: false }, true],
    [{ migrationId: MIGRATION_ID, ramMiB: 256, kernel: '/k', initrd: '/i', postcopy: 'true' }, false],
    [{ migrationId: MIGRATION_ID, ramMiB: 256, kernel: 'vmlinuz', initrd: '/i' }, false],
    [{ migrationId: MIGRATION_ID, ramMiB: 256, kernel: '/k\n', initrd: '/i' }, false],
    [{ migrationId: MIGRATION_ID, ramMiB: 256, kernel: '/k', initrd: '/i', diskPath: 'disk.img' }, false],
    [{ migrationId: MIGRATION_ID, ramMiB: 256, kernel: '/k', initrd: '/i', append: 'a\u0000b' }, false],
    [{ migrationId: MIGRATION_ID, ramMiB: 8, kernel: '/k', initrd: '/i' }, false],
    [{ migrationId: MIGRATION_ID, ramMiB: 256, kernel: '/k', initrd: '/i', machine: 'virt' }, false],
    [{ migrationId: MIGRATION_ID, ramMiB: 256, kernel: '/k', initrd: '/i', accel: 'hvf' }, false],
    [{ migrationId: MIGRATION_ID, ramMiB: 256, kernel: '/k', initrd: '/i', servicePort: 70000 }, false],
    [{ migrationId: MIGRATION_ID, ramMiB: 256, kernel: '/k' }, false],
  ],
  ResumeQemuRequest: [
    [{ migrationId: MIGRATION_ID }, true],
    [{ migrationId: MIGRATION_ID, loadTimeoutMs: 0, announceRounds: 0 }, true],
    [{ migrationId: MIGRATION_ID, announceRounds: 21 }, false],
    [{ migrationId: MIGRATION_ID, loadTimeoutMs: -1 }, false],
  ],
  AbortQemuIncomingRequest: [
    [{ migrationId: MIGRATION_ID }, true],
    [{ migrationId: MIGRATION_ID, stopRunning: true }, true],
    [{ migrationId: MIGRATION_ID, stopRunning: 'yes' }, false],
    [{ migrationId: 'm' }, false],
  ],
  NetMovedRequest: [
    [{ migrationId: MIGRATION_ID, vmId: 'vm-1', addresses: ['10.0.0.5'], fromSite: 'site-a', toSite: 'site-b' }, true],
    [
      {
        migrationId: MIGRATION_ID,
        vmId: 'vm-1',
        addresses: ['10.0.0.5', 'fd00:1::5'],
        fromSite: 'site-a',
        toSite: 'site-b',
        confirm: { timeoutMs: 500, required: true, controllers: 2 },
      },
      true,
    ],
    [{ ...MOVE, confirm: {} }, true],
    [{ ...MOVE, confirm: null }, true],
    [{ ...MOVE, addresses: [] }, false], // a VM without addresses
    [{ ...MOVE, addresses: ['10.0.0.256'] }, false],
    [{ ...MOVE, addresses: ['vm-1.example.com'] }, false],
    [{ ...MOVE, addresses: '10.0.0.5' }, false],
    [{ ...MOVE, addresses: [5] }, false],
    [{ ...MOVE, addresses: undefined }, false],
    [{ ...MOVE, confirm: { required: 'yes' } }, false],
    [{ ...MOVE, confirm: { timeoutMs: 0 } }, false],
    [{ ...MOVE, confirm: { timeoutMs: 1000, extra: 1 } }, false],
    [{ ...MOVE, confirm: [] }, false],
    [{ ...MOVE, confirm: true }, false],
    [{ ...MOVE, toSite: 'Site-B' }, false],
    [{ ...MOVE, fromSite: undefined }, false],
  ],
  RouteMoveRequest: [
    [{ migrationId: MIGRATION_ID, addresses: ['10.0.0.5', '2001:db8::5'], toSite: 'site-b' }, true],
    [{ migrationId: MIGRATION_ID, addresses: [], toSite: 'site-b' }, false],
    [{ migrationId: MIGRATION_ID, addresses: ['10.0.0.5/32'], toSite: 'site-b' }, false],
    [{ migrationId: MIGRATION_ID, addresses: ['10.0.0.5'] }, false],
    [{ migrationId: MIGRATION_ID, addresses: Array.from({ length: 65 }, (_, i) => `10.0.1.${i}`), toSite: 'b' }, false],
  ],
  StartRelayRequest: [
    [RELAY, true],
    [{ ...RELAY, listen: { host: '10.0.0.5', port: 8080, netns: 'wm1a2b3c-a' }, idleMs: 2000 }, true],
    [{ ...RELAY, listen: { host: '::', port: 0 }, target: { host: 'fd00::5', port: 1 } }, true],
    [{ ...RELAY, listen: { host: '127.0.0.1', port: 0, netns: null } }, true],
    [{ ...RELAY, listen: { host: 'localhost', port: 0 } }, false],
    [{ ...RELAY, listen: { host: '127.0.0.1', port: 70000 } }, false],
    [{ ...RELAY, listen: { host: '127.0.0.1', port: 0, netns: '../etc' } }, false],
    [{ ...RELAY, listen: { host: '127.0.0.1', port: 0, netns: 'a b' } }, false],
    [{ ...RELAY, listen: { host: '127.0.0.1' } }, false],
    [{ ...RELAY, listen: undefined }, false],
    [{ ...RELAY, listen: 'x' }, false],
    [{ ...RELAY, target: { host: '10.0.0.5', port: 0 } }, false],
    [{ ...RELAY, target: { host: '10.0.0.5', port: 80, extra: true } }, false],
    [{ ...RELAY, maxMs: undefined }, false],
    [{ ...RELAY, maxMs: 99 }, false],
    [{ ...RELAY, idleMs: 1.5 }, false],
  ],
  StopRelayRequest: [
    [{ migrationId: MIGRATION_ID }, true],
    [{ migrationId: MIGRATION_ID, force: true }, true],
    [{ migrationId: MIGRATION_ID, force: 'now' }, false],
    [{}, false],
  ],
  VmAttachRequest: [
    [NIC, true],
    [{ ...NIC, addresses: ['10.0.0.5', 'fd00::5'], ports: [1, 65535], framing: 'none', netns: 'wm1a2b3c-a' }, true],
    [{ ...NIC, framing: null, netns: null }, true],
    [{ ...NIC, addresses: [] }, false],
    [{ ...NIC, addresses: Array.from({ length: 9 }, (_, i) => `10.0.0.${i + 1}`) }, false],
    [{ ...NIC, addresses: ['10.0.0.300'] }, false],
    [{ ...NIC, ports: [] }, false],
    [{ ...NIC, ports: [0] }, false],
    [{ ...NIC, ports: [70000] }, false],
    [{ ...NIC, ports: [1.5] }, false],
    [{ ...NIC, ports: Array.from({ length: 17 }, (_, i) => i + 1) }, false],
    [{ ...NIC, socket: 'relative.sock' }, false],
    [{ ...NIC, socket: `/${'s'.repeat(107)}` }, false],
    [{ ...NIC, framing: 'bytes' }, false],
    [{ ...NIC, netns: '../etc' }, false],
  ],
  VmRelayRequest: [
    [VM_RELAY, true],
    [{ ...VM_RELAY, tunnelHost: 'fd00::2', idleMs: 30_000 }, true],
    [{ ...VM_RELAY, tunnelHost: 'site-b' }, false],
    [{ ...VM_RELAY, tunnels: [] }, false],
    [{ ...VM_RELAY, tunnels: [7000] }, false],
    [{ ...VM_RELAY, maxMs: 999 }, false],
    [{ ...VM_RELAY, maxMs: 3_600_001 }, false],
    [{ ...VM_RELAY, idleMs: 5 }, false],
  ],
  VmDetachRequest: [
    [{ vmId: 'shop' }, true],
    [{ vmId: 'shop', force: true }, true],
    [{ vmId: 'shop', force: 'yes' }, false],
    [{}, false],
  ],
  VmNicRef: [
    [{ vmId: 'shop' }, true],
    [{ vmId: 'a b' }, false],
    [{ vmId: 'shop', extra: 1 }, false],
  ],
};

function validatorAccepts(dto: new () => object, body: unknown): boolean {
  try {
    validateDto(dto, body);
    return true;
  } catch (err) {
    if (err instanceof ValidationError) return false;
    throw err;
  }
}

describe('dtoSchema', () => {
  it('states CreateMigrationRequest as its decorators and defaults say', () => {
    const schema = dtoSchema(API_REQUEST_DTOS.CreateMigrationRequest);
    expect(schema).toEqual({
      title: 'CreateMigrationRequest',
      type: 'object',
      properties: {
        vmId: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' },
        toSite: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' },
        bandwidthBps: { type: ['integer', 'null'], minimum: 0 },
        downtimeMs: { type: 'integer', minimum: 1, maximum: 600_000, default: 300 },
        policy: { enum: ['smart', 'kvm'], default: 'smart' },
        verify: { type: 'boolean', default: true },
        serviceDeadlineMs: { type: 'integer', minimum: 1000, maximum: 3_600_000, default: 60_000 },
      },
      required: ['vmId', 'toSite'],
      additionalProperties: false,
    });
  });

  describe.each(Object.entries(CASES))('%s: validateDto and the schema agree', (name, cases) => {
    const dto = API_REQUEST_DTOS[name as keyof typeof API_REQUEST_DTOS] as new () => object;
    const validate = schemaValidator().compile(API_SCHEMAS[name as keyof typeof API_SCHEMAS]);
    it.each(cases.map(([body, valid]) => [JSON.stringify(body), body, valid] as const))('%s', (_text, body, valid) => {
      expect(validatorAccepts(dto, body)).toBe(valid);
      expect(validate(body), JSON.stringify(validate.errors)).toBe(valid);
    });
  });

  it('refuses what is not an object, as validateDto does', () => {
    const validate = schemaValidator().compile(API_SCHEMAS.VmRef);
    for (const body of [null, [], 'vm-1', 3]) {
      expect(validatorAccepts(API_REQUEST_DTOS.VmRef, body)).toBe(false);
      expect(validate(body)).toBe(false);
    }
  });

  it('maps strings, UUIDs, arrays with per-item checks, and @ValidateIf as not required', () => {
    class Sample {
      @IsUUID('4')
      id!: string;

      @IsArray()
      @ArrayMaxSize(3)
      @IsInt({ each: true })
      blocks: number[] = [];

      @ValidateIf((o: Sample) => o.path === undefined)
      @Matches(/^[a-z]+$/)
      name?: string;

      @IsOptional()
      @IsString()
      path?: string;
    }
    const schema = dtoSchema(Sample, { properties: { path: 'Where it is.' } });
    expect(schema.required).toEqual(['id']);
    expect(schema.properties).toMatchObject({
      id: { type: 'string', format: 'uuid' },
      blocks: { type: 'array', maxItems: 3, items: { type: 'integer' }, default: [] },
      name: { type: 'string', pattern: '^[a-z]+$' },
      path: { description: 'Where it is.', type: ['string', 'null'] },
    });
    const validate = schemaValidator().compile(schema);
    const good = { id: '0b6f1c1e-4d2a-4c55-9a7e-2f0d8e1b3c4a', blocks: [1, 2], name: 'a' };
    for (const [body, valid] of [
      [good, true],
      [{ ...good, id: '0b6f1c1e-4d2a-1c55-9a7e-2f0d8e1b3c4a' }, false], // a version-1 UUID
      [{ ...good, blocks: [1, 2, 3, 4] }, false],
      [{ ...good, blocks: [1.5] }, false],
    ] as const) {
      expect(validatorAccepts(Sample, body)).toBe(valid);
      expect(validate(body)).toBe(valid);
    }
  });

  it('maps @NestedDto as the nested class’s schema and @IsIP as the ipv4/ipv6 formats', () => {
    class Endpoint {
      @IsIP('4')
      host!: string;

      @IsInt()
      port: number = 80;
    }
    class Sample {
      @NestedDto(() => Endpoint)
      to!: Endpoint;

      @IsOptional()
      @NestedDto(() => Endpoint)
      via?: Endpoint;

      @IsArray()
      @IsIP(undefined, { each: true })
      addresses!: string[];
    }
    const schema = dtoSchema(Sample, { properties: { to: 'Where.' } });
    const endpoint = {
      type: 'object',
      properties: { host: { type: 'string', format: 'ipv4' }, port: { type: 'integer', default: 80 } },
      required: ['host'],
      additionalProperties: false,
    };
    expect(schema.properties).toEqual({
      to: { description: 'Where.', ...endpoint },
      via: { ...endpoint, type: ['object', 'null'] },
      addresses: {
        type: 'array',
        items: {
          type: 'string',
          anyOf: [
            { type: 'string', format: 'ipv4' },
            { type: 'string', format: 'ipv6' },
          ],
        },
      },
    });
    expect(schema.required).toEqual(['to', 'addresses']);
    const validate = schemaValidator().compile(schema);
    const good = { to: { host: '10.0.0.1' }, addresses: ['::1'] };
    for (const [body, valid] of [
      [good, true],
      [{ ...good, to: { host: '::1' } }, false],
      [{ ...good, to: { host: '10.0.0.1', port: 'x' } }, false],
      [{ ...good, to: { host: '10.0.0.1', other: 1 } }, false],
      [{ ...good, to: [{ host: '10.0.0.1' }] }, false],
      [{ ...good, via: null }, true],
      [{ ...good, addresses: ['10.0.0.1', 'host'] }, false],
    ] as const) {
      expect(validatorAccepts(Sample, body), JSON.stringify(body)).toBe(valid);
      expect(validate(body), JSON.stringify(body)).toBe(valid);
    }
    expect(validateDto(Sample, good).to).toBeInstanceOf(Endpoint);
  });

  it('refuses what it cannot state: custom constraints, regex flags, contradictions, stray annotations', () => {
    expect(() => dtoSchema(PrepareDiskRequest)).toThrow(SchemaGenerationError);
    expect(() => dtoSchema(PrepareDiskRequest)).toThrow(
      /PrepareDiskRequest\.blockSize: no JSON Schema mapping for @powerOfTwo/,
    );

    class CaseInsensitive {
      @Matches(/^[a-z]+$/i)
      name!: string;
    }
    expect(() => dtoSchema(CaseInsensitive)).toThrow(/CaseInsensitive\.name: regex flags \/i/);

    class Contradiction {
      @IsString()
      @IsInt()
      value!: string;
    }
    expect(() => dtoSchema(Contradiction)).toThrow(/contradictory type checks/);

    class Bare {
      @ValidateNested()
      inner!: object;
    }
    expect(() => dtoSchema(Bare)).toThrow(/Bare\.inner: @ValidateNested without @NestedDto/);

    class Plain {
      name = 'x';
    }
    expect(() => dtoSchema(Plain)).toThrow(/Plain: has no class-validator metadata/);
    expect(() => dtoSchema(API_REQUEST_DTOS.VmRef, { properties: { vmid: 'typo' } as Record<string, string> })).toThrow(
      /VmRef\.vmid: annotated but not validated/,
    );
  });
});

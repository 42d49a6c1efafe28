import { describe, expect, it } from 'vitest';
import { ValidationError } from '../errors.js';
import { validateDto } from '../validate.js';
import { CreateMigrationRequest, ListMigrationsRequest, MigrationPhase, isTerminalPhase } from './migration.dto.js';

describe('migration DTOs', () => {
  it('fills downtime and policy defaults and keeps an explicit bandwidth', () => {
    const request = validateDto(CreateMigrationRequest, { vmId: 'vm-1', toSite: 'site-b', bandwidthBps: 1000 });
    expect(request).toMatchObject({ vmId: 'vm-1', toSite: 'site-b', bandwidthBps: 1000, downtimeMs: 300 });
    expect(request.policy).toBe('smart');
  });

  it('lists every bad key and refuses unknown ones', () => {
    try {
      validateDto(CreateMigrationRequest, { vmId: 'a b', toSite: 'Site B', policy: 'fast', downtimeMs: 0, x: 1 });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ValidationError);
      const keys = (err as ValidationError).problems.map((p) => p.split(':')[0]);
      expect(keys).toEqual(expect.arrayContaining(['vmId', 'toSite', 'policy', 'downtimeMs', 'x']));
    }
    expect(() => validateDto(ListMigrationsRequest, { unfinished: 'yes' })).toThrow(ValidationError);
  });

  it('knows the terminal phases', () => {
    expect(Object.values(MigrationPhase).filter(isTerminalPhase)).toEqual(['COMMITTED', 'ROLLED_BACK']);
  });
});

import {
  MigrationPhase,
  MigrationPolicy,
  type ListMigrationsReply,
  type MigrationDestinationView,
  type MigrationFigures,
  type MigrationHistoryEntry,
  type MigrationOptionsView,
  type MigrationView,
} from '../control/migration.dto.js';
import { WIRE_ERROR_SCHEMA } from './error.schemas.js';
import {
  amount,
  arrayOf,
  boolean,
  count,
  objectSchema,
  oneOfValues,
  string,
  timestamp,
  uuid,
} from './object.schema.js';

const MIGRATION_OPTIONS_SCHEMA = objectSchema<MigrationOptionsView>({
  description: 'The options the migration was created with, defaults filled in.',
  properties: {
    bandwidthBps: count('Bandwidth budget in bits per second for disk and memory together; absent: the link’s own.'),
    downtimeMs: count('Longest pause of the guest the memory pre-copy aims for.'),
    policy: oneOfValues(MigrationPolicy, 'Memory convergence policy.'),
    verify: boolean('Destination disk and RAM are checked against the source at pause.'),
    serviceDeadlineMs: count(
      'How long a service the migration needs may stay away (killed, restarting) before it rolls back; absent: 60000.',
    ),
  },
  optional: { bandwidthBps: true, serviceDeadlineMs: true },
});

const MIGRATION_HISTORY_ENTRY_SCHEMA = objectSchema<MigrationHistoryEntry>({
  properties: {
    phase: oneOfValues(MigrationPhase),
    at: timestamp('When the phase was entered.'),
    note: string(),
  },
  optional: { note: true },
});

const MIGRATION_FIGURES_SCHEMA = objectSchema<MigrationFigures>({
  description: 'Figures gathered as the migration runs; each appears once measured.',
  properties: {
    diskBytes: count(),
    ramBytes: count(),
    diskRawBytes: count('Disk bytes sent, before the codec.'),
    memoryRawBytes: count('Memory bytes sent, before the codec.'),
    diskWireBytes: count('What the disk bytes cost in frames on the data plane (with resends).'),
    memoryWireBytes: count('What the memory bytes cost in frames on the data plane (with resends).'),
    downtimeMs: amount('The guest paused at the source until it ran at the destination.'),
    diskFinalizeMs: amount('Of the pause: finalizing the disk.'),
    holdMs: amount('Of the pause: held before the destination’s resume while the route moved.'),
    diskVerifyMs: amount("Of the disk's finalize: comparing both images' digests."),
    ramCheckMs: amount('Of the pause: the destination hashing its RAM.'),
    diskVerified: boolean(),
    ramVerified: boolean(),
    memoryRounds: count(),
    diskRounds: count(),
    stopReason: string(),
    answersMatch: boolean('The VM gave the same answers at the destination (before it ran) as at the source at pause.'),
    serviceAddress: string('Where the guest’s service answers now (host:port).'),
    pausedAt: count('Epoch milliseconds the source paused.'),
    resumedAt: count('Epoch milliseconds the VM ran at the destination.'),
    routeMovedAt: count('Epoch milliseconds the VM’s /32s pointed at the destination (inside the pause).'),
    redirectMs: count('REDIRECT from start to end: the relay at the source, `net.moved`.'),
    totalSeconds: amount(),
  },
  optional: {
    diskBytes: true,
    ramBytes: true,
    diskRawBytes: true,
    memoryRawBytes: true,
    diskWireBytes: true,
    memoryWireBytes: true,
    downtimeMs: true,
    diskFinalizeMs: true,
    holdMs: true,
    diskVerifyMs: true,
    ramCheckMs: true,
    diskVerified: true,
    ramVerified: true,
    memoryRounds: true,
    diskRounds: true,
    stopReason: true,
    answersMatch: true,
    serviceAddress: true,
    pausedAt: true,
    resumedAt: true,
    routeMovedAt: true,
    redirectMs: true,
    totalSeconds: true,
  },
});

const MIGRATION_DESTINATION_SCHEMA = objectSchema<MigrationDestinationView>({
  description: 'What the destination set up for the migration.',
  properties: {
    diskPath: string('The destination image.'),
    ramPath: string('The destination RAM file the VM runs from (ACTIVATE).'),
    diskUri: string('The destination image as the destination serves it to the arriving VM.'),
    redirectStarted: boolean('The route move began (inside the pause): a rollback puts the route back.'),
    resumed: boolean('The destination runs the VM: past the point of no return, only forward recovery remains.'),
  },
  optional: { diskPath: true, ramPath: true, diskUri: true, redirectStarted: true, resumed: true },
});

export const MIGRATION_VIEW_SCHEMA = objectSchema<MigrationView>({
  description: 'A migration: where it moves which VM, its phase, and its history.',
  properties: {
    id: uuid(),
    vmId: string(),
    fromSite: string(),
    toSite: string(),
    options: MIGRATION_OPTIONS_SCHEMA,
    phase: oneOfValues(MigrationPhase),
    epoch: count('Incremented on every transition.'),
    history: arrayOf(MIGRATION_HISTORY_ENTRY_SCHEMA, 'Every phase entered, oldest first.'),
    createdAt: timestamp(),
    updatedAt: timestamp(),
    error: WIRE_ERROR_SCHEMA,
    figures: MIGRATION_FIGURES_SCHEMA,
    destination: MIGRATION_DESTINATION_SCHEMA,
  },
  optional: { error: true, figures: true, destination: true },
});

export const LIST_MIGRATIONS_REPLY_SCHEMA = objectSchema<ListMigrationsReply>({
  properties: { migrations: arrayOf(MIGRATION_VIEW_SCHEMA) },
  optional: {},
});

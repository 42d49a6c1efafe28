import {
  CLOUDEVENTS_SPECVERSION,
  MigrationEventKind,
  migrationEventType,
  type CloudEvent,
} from '../control/migration-event.types.js';
import { NET_MOVED_EVENT_TYPE } from '../control/net-redirect.dto.js';
import { objectSchema, string, timestamp, uuid } from './object.schema.js';

/** The CloudEvents 1.0 envelope (JSON structured mode) of a migration event; `data` depends on `type`. */
export const CLOUD_EVENT_SCHEMA = objectSchema<CloudEvent>({
  description: 'A migration event: a CloudEvents 1.0 envelope in JSON structured mode.',
  properties: {
    specversion: { const: CLOUDEVENTS_SPECVERSION },
    id: uuid('Unique per event; a republished event keeps its id.'),
    source: string(
      '`wanmig/orchestrator/<site>` (`wanmig/net-redirect/<site>` for `io.wanmig.net.moved`): the site that published it.',
    ),
    type: {
      type: 'string',
      enum: [...Object.values(MigrationEventKind).map(migrationEventType), NET_MOVED_EVENT_TYPE],
    },
    subject: string('The migration id.'),
    time: timestamp(),
    datacontenttype: { const: 'application/json' },
    data: { description: 'The event’s payload; its shape depends on `type`.' },
  },
  optional: {},
});

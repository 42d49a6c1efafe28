import { randomUUID } from 'node:crypto';
import type { Deserializer, IncomingEvent, IncomingRequest } from '@nestjs/microservices';

interface NatsLikeMessage {
  data: Uint8Array;
}

/**
 * Lets any NATS client call a service with plain JSON: a message in Nest's envelope (`{pattern, data, id}`) is taken
 * as it is; any other payload is the request body itself, answered when the message has a reply subject. Without
 * this, Nest treats a bare request as an event and never replies.
 */
export class ExternalRequestDeserializer implements Deserializer<NatsLikeMessage, IncomingRequest | IncomingEvent> {
  deserialize(message: NatsLikeMessage, options?: Record<string, unknown>): IncomingRequest | IncomingEvent {
    const text = Buffer.from(message.data).toString('utf8');
    let value: unknown;
    try {
      value = text.length === 0 ? {} : JSON.parse(text);
    } catch {
      // Handed to the handler as a string: its DTO validation refuses it with a clear VALIDATION error.
      value = text;
    }
    const channel = typeof options?.channel === 'string' ? options.channel : '';
    if (isEnvelope(value)) return value;
    if (typeof options?.replyTo === 'string' && options.replyTo.length > 0) {
      return { pattern: channel, data: value, id: randomUUID() };
    }
    return { pattern: channel, data: value };
  }
}

function isEnvelope(value: unknown): value is IncomingRequest {
  return (
    typeof value === 'object' &&
    value !== null &&
    'pattern' in value &&
    'data' in value &&
    typeof (value as { id?: unknown }).id === 'string'
  );
}

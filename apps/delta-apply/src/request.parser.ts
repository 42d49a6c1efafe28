import { validateDto, ValidationError } from '@wanmig/protocol';

/**
 * Validates a control request body (INVALID_REQUEST listing every bad key). Migration ids must also
 * be lower-case: frames carry the id as 16 bytes and decode to lower case, and the data subjects
 * use the id as given, so an upper-case id could never match its own frames.
 */
export function parseRequest<T extends { migrationId: string }>(dto: new () => T, body: unknown): T {
  const request = validateDto(dto, body);
  if (request.migrationId !== request.migrationId.toLowerCase()) {
    throw new ValidationError(['migrationId: must be lower-case'], dto.name);
  }
  return request;
}

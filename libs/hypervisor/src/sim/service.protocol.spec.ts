import { describe, expect, it } from 'vitest';
import { ServiceRequestError, formatServiceError, parseServiceReply, parseServiceRequest } from './service.protocol.js';

describe('service protocol', () => {
  it('parses every command, case-insensitively, with surrounding blanks', () => {
    expect(parseServiceRequest('PING')).toEqual({ command: 'PING' });
    expect(parseServiceRequest('  counter ')).toEqual({ command: 'COUNTER' });
    expect(parseServiceRequest('GET k17')).toEqual({ command: 'GET', key: 'k17' });
    expect(parseServiceRequest('page 4095')).toEqual({ command: 'PAGE', page: 4095 });
    expect(parseServiceRequest('DISK  12')).toEqual({ command: 'DISK', block: 12 });
    expect(parseServiceRequest('State')).toEqual({ command: 'STATE' });
    expect(parseServiceRequest('QUIT')).toEqual({ command: 'QUIT' });
  });

  it('refuses unknown commands, wrong arity and bad numbers with INVALID_REQUEST', () => {
    for (const line of ['', 'HELLO', 'PING 1', 'GET', 'GET a b', 'PAGE -1', 'PAGE 1.5', 'PAGE x', 'DISK 1e3']) {
      let err: unknown;
      try {
        parseServiceRequest(line);
      } catch (e) {
        err = e;
      }
      expect(err, line).toBeInstanceOf(ServiceRequestError);
      expect((err as ServiceRequestError).code).toBe('INVALID_REQUEST');
    }
  });

  it('formats errors on one line and reads replies back', () => {
    const line = formatServiceError('NOT_FOUND', 'no key\nk999');
    expect(line).toBe('ERR NOT_FOUND no key k999');
    expect(parseServiceReply(line)).toEqual({ ok: false, code: 'NOT_FOUND', message: 'no key k999' });
    expect(parseServiceReply('PONG 12')).toEqual({ ok: true, value: 'PONG 12' });
  });
});

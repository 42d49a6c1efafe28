const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function isUuid(value: string): boolean {
  return UUID_RE.test(value);
}

export function uuidToBytes(id: string, target: Buffer, at: number): void {
  if (!isUuid(id)) throw new TypeError(`migration id must be a UUID, got ${JSON.stringify(id)}`);
  target.write(id.replaceAll('-', ''), at, 16, 'hex');
}

export function bytesToUuid(source: Buffer, at: number): string {
  const hex = source.toString('hex', at, at + 16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

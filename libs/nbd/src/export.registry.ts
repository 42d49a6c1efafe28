import { NbdExportExistsError, NbdExportNotFoundError } from './errors.js';
import { type ExportBackend, type NbdExport } from './export.backend.js';
import { type ExportDirectory, type NegotiableExport } from './handshake.negotiator.js';
import { TransmissionFlag } from './nbd.constants.js';
import { RangeLock } from './range.lock.js';

/** An export as the server holds it: the caller's config, its range lock and its flags. */
export class ExportEntry implements NegotiableExport {
  readonly lock = new RangeLock();
  readonly readOnly: boolean;

  constructor(readonly config: NbdExport) {
    this.readOnly = (config.readOnly ?? false) || (config.backend.readOnly ?? false);
  }

  get name(): string {
    return this.config.name;
  }
  get description(): string | undefined {
    return this.config.description;
  }
  get backend(): ExportBackend {
    return this.config.backend;
  }
  get size(): number {
    return this.config.backend.size;
  }

  transmissionFlags(structuredReplies: boolean): number {
    let flags =
      TransmissionFlag.HasFlags | TransmissionFlag.SendFlush | TransmissionFlag.SendFua | TransmissionFlag.SendCache;
    if (this.readOnly) flags |= TransmissionFlag.ReadOnly;
    else flags |= TransmissionFlag.SendTrim | TransmissionFlag.SendWriteZeroes | TransmissionFlag.SendFastZero;
    // Replies are never fragmented, so DF is honoured trivially — but only once structured replies exist.
    if (structuredReplies) flags |= TransmissionFlag.SendDf;
    if (this.backend.multiConn) flags |= TransmissionFlag.CanMultiConn;
    return flags;
  }
}

/** The server's exports by name, and which one answers the empty name. */
export class ExportRegistry implements ExportDirectory<ExportEntry> {
  private readonly entries = new Map<string, ExportEntry>();
  private defaultName?: string;

  constructor(defaultName?: string) {
    this.defaultName = defaultName;
  }

  add(config: NbdExport): ExportEntry {
    if (this.entries.has(config.name)) throw new NbdExportExistsError(config.name);
    const entry = new ExportEntry(config);
    this.entries.set(config.name, entry);
    return entry;
  }

  remove(name: string): ExportEntry {
    const entry = this.entries.get(name);
    if (!entry) throw new NbdExportNotFoundError(name);
    this.entries.delete(name);
    return entry;
  }

  get(name: string): ExportEntry {
    const entry = this.entries.get(name);
    if (!entry) throw new NbdExportNotFoundError(name);
    return entry;
  }

  setDefault(name: string | undefined): void {
    this.defaultName = name;
  }

  /** Exact name first; the empty name falls back to the default export, or the only one. */
  find(name: string): ExportEntry | undefined {
    const exact = this.entries.get(name);
    if (exact || name !== '') return exact;
    if (this.defaultName !== undefined) return this.entries.get(this.defaultName);
    return this.entries.size === 1 ? this.entries.values().next().value : undefined;
  }

  list(): readonly ExportEntry[] {
    return [...this.entries.values()];
  }
}

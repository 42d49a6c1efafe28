import { type FileHandle, open } from 'node:fs/promises';
import { BlockMap } from '@wanmig/blockmap';
import { MemoryRangeError } from '../errors.js';
import { type PageMemory } from '../hypervisor.driver.js';
import { ControlOp } from './control.protocol.js';
import { type GuestLink } from './guest.link.js';
import { SIM_PAGE_SIZE } from './sim.constants.js';

/**
 * A sim guest's RAM as a migration reads it: straight from the RAM file (positional reads, as large
 * as the caller asks), with the dirty log drained through the control channel. Reads see what the
 * guest wrote, because the guest writes the file before it marks the page.
 */
export class SimPageMemory implements PageMemory {
  readonly pageSize = SIM_PAGE_SIZE;
  private file: Promise<FileHandle> | undefined;

  constructor(
    private readonly link: GuestLink,
    readonly ramFile: string,
    readonly ramBytes: number,
  ) {}

  async read(offset: number, length: number): Promise<Buffer> {
    const vmId = this.link.vmId;
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new MemoryRangeError(vmId, offset, length, 'offset and length must be non-negative integers');
    }
    if (offset % SIM_PAGE_SIZE !== 0 || (length % SIM_PAGE_SIZE !== 0 && offset + length !== this.ramBytes)) {
      throw new MemoryRangeError(vmId, offset, length, `not aligned to ${SIM_PAGE_SIZE}-byte pages`);
    }
    if (offset + length > this.ramBytes) throw new MemoryRangeError(vmId, offset, length, 'beyond the end of RAM');
    this.file ??= open(this.ramFile, 'r');
    const fh = await this.file;
    const out = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(out, done, length - done, offset + done);
      if (bytesRead === 0) {
        out.fill(0, done);
        break;
      }
      done += bytesRead;
    }
    return out;
  }

  async drainDirty(): Promise<BlockMap> {
    const { map } = await this.link.call<{ map: string; pages: number }>(ControlOp.DrainDirty);
    return BlockMap.deserialize(Buffer.from(map, 'base64'), BlockMap.forSize(this.ramBytes, SIM_PAGE_SIZE));
  }

  async stopDirtyLog(): Promise<void> {
    await this.link.call(ControlOp.StopDirtyLog);
  }

  /** Closes the RAM file. */
  async close(): Promise<void> {
    const file = this.file;
    this.file = undefined;
    await file?.then((fh) => fh.close()).catch(() => undefined);
  }
}

import { isIP } from 'node:net';
import { CommandFailedError, type CommandExecutor } from '../route/command.executor.js';

export interface LoopbackAddressesOptions {
  ipBin: string;
  commandTimeoutMs: number;
}

/** What `ip addr del` says when the address is not there: already gone is what a removal wants. */
const NOT_THERE = /Cannot assign requested address/;

/**
 * A VM's addresses on a namespace's `lo` (/32, /128 for IPv6): where the site answers for the VM. The router's host
 * route decides which site's copy a client reaches; the address itself only makes the site's kernel accept it.
 */
export class LoopbackAddresses {
  constructor(
    private readonly options: LoopbackAddressesOptions,
    private readonly executor: CommandExecutor,
  ) {}

  /** `ip -n <ns> addr replace <addr>/32 dev lo`: a repeat is harmless. */
  async add(netns: string, address: string): Promise<void> {
    await this.run(['-n', netns, 'addr', 'replace', prefix(address), 'dev', 'lo']);
  }

  /** `ip -n <ns> addr del <addr>/32 dev lo`; an address that is not there counts as removed. */
  async remove(netns: string, address: string): Promise<void> {
    try {
      await this.run(['-n', netns, 'addr', 'del', prefix(address), 'dev', 'lo']);
    } catch (err) {
      if (err instanceof CommandFailedError && NOT_THERE.test(err.stderr)) return;
      throw err;
    }
  }

  /** Removes each address, all of them tried; rejects with the first failure once done. */
  async removeAll(netns: string, addresses: readonly string[]): Promise<void> {
    const results = await Promise.allSettled(addresses.map((address) => this.remove(netns, address)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  private async run(args: string[]): Promise<void> {
    await this.executor.run([this.options.ipBin, ...args], { timeoutMs: this.options.commandTimeoutMs });
  }
}

function prefix(address: string): string {
  return `${address}/${isIP(address) === 6 ? 128 : 32}`;
}

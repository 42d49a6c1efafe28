import { SimServiceClient } from '@wanmig/hypervisor';

/** What an embedded guest says of itself (its service's `STATE`): run state, counter, disk writes and errors. */
export interface GuestState {
  state: string;
  counter: number;
  diskWrites: number;
  diskErrors: number;
  uptimeMs: number;
}

/** Asks the embedded guest at `address` (host:port or unix:path) its state, on a connection of its own. */
export async function guestState(address: string): Promise<GuestState> {
  const client = await SimServiceClient.connect(address);
  try {
    return JSON.parse(await client.request('STATE')) as GuestState;
  } finally {
    client.close();
  }
}

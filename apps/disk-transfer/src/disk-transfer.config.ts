import { IsNotEmpty, IsString, Matches } from 'class-validator';

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
export const DEFAULT_SITE = 'site-a';
/** Exports, migrations under way and activity logs: what a restarted disk-transfer needs to go on. */
export const DEFAULT_DATA_DIR = '/var/lib/wanmig/disk-transfer';

/** Validated once at boot from WANMIG_* environment variables and command-line flags. */
export class DiskTransferConfig {
  @IsString()
  natsUrl: string = DEFAULT_NATS_URL;

  @Matches(/^[a-z0-9][a-z0-9-]{0,62}$/)
  site: string = DEFAULT_SITE;

  @IsString()
  @IsNotEmpty()
  dataDir: string = DEFAULT_DATA_DIR;
}

export const DISK_TRANSFER_CONFIG = Symbol('DISK_TRANSFER_CONFIG');
export const NATS_CONNECTION = Symbol('NATS_CONNECTION');

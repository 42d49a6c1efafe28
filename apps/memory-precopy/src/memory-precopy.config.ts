import { IsString, Matches } from 'class-validator';
import { DEFAULT_SIM_RUNTIME_DIR } from '@wanmig/hypervisor';

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
export const DEFAULT_SITE = 'site-a';

/** Validated once at boot from WANMIG_* environment variables and command-line flags. */
export class MemoryPrecopyConfig {
  @IsString()
  natsUrl: string = DEFAULT_NATS_URL;

  @Matches(/^[a-z0-9][a-z0-9-]{0,62}$/)
  site: string = DEFAULT_SITE;

  /** Where the sim driver's guests keep their control sockets, and the QEMU relays their sockets (`qemu/`). */
  @IsString()
  runtimeDir: string = DEFAULT_SIM_RUNTIME_DIR;
}

export const MEMORY_PRECOPY_CONFIG = Symbol('MEMORY_PRECOPY_CONFIG');
export const NATS_CONNECTION = Symbol('NATS_CONNECTION');
export const HYPERVISOR_DRIVER = Symbol('HYPERVISOR_DRIVER');

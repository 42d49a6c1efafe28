import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IsIn, IsInt, IsString, Matches, Max, Min } from 'class-validator';
import { DEFAULT_SIM_RUNTIME_DIR } from '@wanmig/hypervisor';
import { DEFAULT_HOLD_TIMEOUT_MS } from '@wanmig/protocol';

export const DEFAULT_NATS_URL = 'nats://127.0.0.1:4222';
export const DEFAULT_SITE = 'site-a';
export const DEFAULT_DATA_DIR = join(tmpdir(), 'wanmig-orchestrator');
export const DEFAULT_NET_MOVED_TIMEOUT_MS = 2_000;

/** Validated once at boot from WANMIG_* environment variables and command-line flags. */
export class OrchestratorConfig {
  @IsString()
  natsUrl: string = DEFAULT_NATS_URL;

  @Matches(/^[a-z0-9][a-z0-9-]{0,62}$/)
  site: string = DEFAULT_SITE;

  /** The other sites this one migrates to, comma-separated (`site-b,site-c`). */
  @Matches(/^([a-z0-9][a-z0-9-]{0,62}(,[a-z0-9][a-z0-9-]{0,62})*)?$/)
  peers: string = '';

  /** JetStream domain of this site's server (migration records and events); defaults to the site name. */
  @Matches(/^[A-Za-z0-9_-]*$/)
  jsDomain: string = '';

  /** Where VM disks created here live. */
  @IsString()
  dataDir: string = DEFAULT_DATA_DIR;

  /** The sim driver's runtime dir: shared with memory-precopy and delta-apply of this site. */
  @IsString()
  simRuntimeDir: string = DEFAULT_SIM_RUNTIME_DIR;

  /**
   * The accelerator QEMU VMs launched here run under: `auto` boots a guest under KVM once and falls back to TCG when
   * it makes no progress (a host may open /dev/kvm and still not run guests); `tcg` skips that probe.
   */
  @IsIn(['auto', 'tcg', 'kvm'])
  qemuAccel: 'auto' | 'tcg' | 'kvm' = 'auto';

  /** HTTP API port on `httpHost` (0: any free port; -1: no HTTP API). */
  @IsInt()
  @Min(-1)
  @Max(65535)
  httpPort: number = -1;

  @IsString()
  httpHost: string = '127.0.0.1';

  /**
   * External controllers (load balancers, DNS, SDN) that must confirm a VM's move on the `net.moved` hook; 0: the
   * event only informs. A move they have not confirmed yet is asked again (REDIRECT is past the point of no return).
   */
  @IsInt()
  @Min(0)
  @Max(16)
  netMovedControllers: number = 0;

  /**
   * How long memory-precopy holds a paused switchover for this orchestrator's go (the route move) before it rolls
   * back on its own: what an orchestrator that dies there costs the guest at most.
   */
  @IsInt()
  @Min(100)
  @Max(600_000)
  switchoverHoldMs: number = DEFAULT_HOLD_TIMEOUT_MS;

  /** How long each ask on the `net.moved` hook waits for those confirmations. */
  @IsInt()
  @Min(1)
  @Max(60_000)
  netMovedTimeoutMs: number = DEFAULT_NET_MOVED_TIMEOUT_MS;
}

export function peerSites(config: OrchestratorConfig): string[] {
  return config.peers.split(',').filter((s) => s.length > 0 && s !== config.site);
}

export const ORCHESTRATOR_CONFIG = Symbol('ORCHESTRATOR_CONFIG');
export const NATS_CONNECTION = Symbol('NATS_CONNECTION');

/** What the volume service says about QoS (issue 15; docs/qos.md): settings, policies, live counters. */
import type { QosLimits } from './limits.js';

/**
 * A change to a volume's or pool's own QoS: limits field by field (a number sets one, null removes
 * it; `limits: null` removes them all), a policy (null detaches it). Absent: unchanged.
 */
export interface QosSettingChange {
  limits?: { readonly [field: string]: number | null | undefined } | null;
  policy?: string | null;
}

/** Where the limits that apply come from, in precedence order. */
export type QosSource = 'volume' | 'volume-policy' | 'pool' | 'pool-policy' | 'none';

export interface QosInfo {
  /** What the volume (or pool) itself sets: its own limits, its attached policy. */
  limits: QosLimits | undefined;
  policy: string | undefined;
  /** The limits that apply (undefined: none), and where they come from. */
  effective: QosLimits | undefined;
  source: QosSource;
  /** The policy the effective limits are (for the '*-policy' sources). */
  sourcePolicy: string | undefined;
}

export interface QosPolicyInfo {
  name: string;
  limits: QosLimits;
  /** Volumes (including those in the trash) and pools that attach it. */
  volumeCount: number;
  poolCount: number;
  createdAt: string;
}

/** One exported volume's throttle, for /metrics (snapshots' exports count with their volume). */
export interface QosVolumeStats {
  pool: string;
  volume: string;
  /** True while a limit applies. */
  limited: boolean;
  /** Requests waiting in the throttle now. */
  queued: number;
  /** Requests that waited, and for how long in all (seconds), since the volume was exported. */
  throttledRequests: number;
  throttledSeconds: number;
}

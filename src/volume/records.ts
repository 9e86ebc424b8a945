/**
 * The records of the volume layer's catalog tables (catalog-tables.ts): one JSON value per record
 * under `<table>/<id>`. Names are user chosen and can change (rename); ids are Strata's and never
 * change. Times are ISO-8601 strings.
 */
import type { DedupPoolConfig } from '../core/chunked-pools.js';
import type { QosLimits } from './qos/limits.js';

/**
 * A volume's or a pool's own QoS (docs/qos.md): limits, a named policy, or both (its own limits
 * win). A pool's is the default of its volumes that set neither.
 */
export interface QosSetting {
  limits?: QosLimits;
  /** The name of a QosPolicyRecord. */
  policy?: string;
}

/** A named set of QoS limits that volumes and pools attach (Cinder's qos-specs). */
export interface QosPolicyRecord {
  name: string;
  limits: QosLimits;
  createdAt: string;
}

export interface PoolRecord {
  name: string;
  /** Sum of the volumes' provisioned sizes may not exceed this (absent: no quota). */
  quotaBytes?: number;
  /**
   * A dedup pool's configuration (absent: a local pool, the default, stored as it always was):
   * its sealed layers are chunk manifests, their chunks stored once per pool.
   */
  dedup?: DedupPoolConfig;
  /** The QoS of the pool's volumes that have none of their own (absent: unlimited). */
  qos?: QosSetting;
  createdAt: string;
}

export interface VolumeRecord {
  id: string;
  pool: string;
  name: string;
  /** Virtual size: the active layer's size. */
  sizeBytes: number;
  activeLayerId: string;
  snapshotLimit?: number;
  /** The volume's own QoS (absent: its pool's default applies). */
  qos?: QosSetting;
  createdAt: string;
  /**
   * Set while the volume is in its pool's trash (trash.ts): its name is free (the name index has
   * no entry for it; the trash index has one), its layers and snapshots stay until it is purged.
   */
  trash?: TrashState;
}

export interface TrashState {
  deletedAt: string;
  /** After this time the daemon purges it. */
  expiresAt: string;
}

/**
 * One qcow2 file in a pool: `<data>/pools/<pool>/<fileName>`. Every layer is either a volume's
 * active layer or a snapshot's layer (never both, never neither).
 */
export interface LayerRecord {
  id: string;
  pool: string;
  /** `<id>.qcow2`. */
  fileName: string;
  /** The layer this one's backing file names (absent: no backing file). */
  backingLayerId?: string;
  /** The volume whose active layer or snapshot this layer is. */
  ownerVolumeId: string;
  /** Frozen layers are snapshot layers: their contents never change (copy-up keeps what they read). */
  frozen: boolean;
  /**
   * A frozen layer no snapshot names (dedup pools): the volume's active layer as it was when the
   * seal policy or `volume seal` froze it (freeze.ts). Compaction (compact.ts) merges adjacent ones;
   * a rollback past one removes it. Absent on every other layer.
   */
  internal?: true;
  createdAt: string;
}

export interface SnapshotRecord {
  id: string;
  volumeId: string;
  pool: string;
  name: string;
  layerId: string;
  /** The volume's virtual size when the snapshot was taken (= its layer's size). */
  sizeBytes: number;
  protected: boolean;
  /**
   * Set on a member snapshot of a group snapshot (group-snapshots.ts): deleted and renamed only
   * with its group snapshot; absent for a volume's own snapshots.
   */
  groupSnapshotId?: string;
  createdAt: string;
}

export type JobKindRecord = 'flatten' | 'copy' | 'import' | 'export' | 'snapshot-delete' | 'seal' | 'gc' | 'scrub' | 'evict' | 'compact' | 'bucket-purge';
export type JobStateRecord = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobRecord {
  id: string;
  kind: JobKindRecord;
  target: string;
  state: JobStateRecord;
  doneBytes: number;
  totalBytes: number;
  error?: { code: string; message: string };
  createdAt: string;
  finishedAt?: string;
}

/** A file an intent refers to: `<data>/pools/<pool>/<fileName>`. */
export interface FileRef {
  pool: string;
  fileName: string;
}

/**
 * What a multi-step operation is about to do, written before any file work (docs/daemon.md,
 * "Crash consistency"). `prepared`: the operation's catalog batch has not landed; recovery rolls it
 * back (except a resize, which it finishes). `committed`: the batch landed (it set this phase);
 * recovery finishes it.
 */
export interface IntentRecord {
  id: string;
  /** The operation, for logs ("snapshot-create", "snapshot-delete", "flatten", ...). */
  kind: string;
  phase: 'prepared' | 'committed';
  /** "pool/volume" the operation works on, for logs. */
  target: string;
  /** Files the operation creates: deleted when rolled back. */
  createFiles: FileRef[];
  /** Files to delete once committed. */
  deleteFiles: FileRef[];
  /**
   * Existing layers whose backing file the operation may rewrite (after making their contents
   * independent of the change): when rolled back, their headers are set back to what the catalog says.
   */
  rebaseLayerIds: string[];
  /** Existing layers the operation writes to (copy-up): checked and repaired for leaks by recovery. */
  writeLayerIds: string[];
  /**
   * A resize of a volume's active layer. Recovery finishes it rather than undoing it (a shrink may
   * already have dropped the data past the new end): the layer is resized to toBytes, what a larger
   * backing file would show past fromBytes is zeroed, and the volume record gets the new size.
   */
  resize?: { volumeId: string; layerId: string; fromBytes: number; toBytes: number };
  /**
   * A seal of this frozen layer of a dedup pool (sealing.ts). Recovery keeps the layer as it finds
   * it (a local file or a manifest: the seal stores the manifest before it removes the file),
   * drops a local copy a sealed layer still has, audits the pool's reference counts for what a
   * seal killed part-way added, and leaves the seal to be redone.
   */
  seal?: { layerId: string; file: FileRef };
  /**
   * A compaction (compact.ts): sealed layer `upperLayerId` is being rewritten in place as the merge
   * of itself over `lowerLayerId`, its header then naming `backingFile` (lower's backing; absent:
   * none). Recovery reads upper's header: naming `backingFile`, the merge landed and the catalog
   * change is finished; naming lower, it did not and the intent is dropped.
   */
  compact?: { volumeId: string; upperLayerId: string; lowerLayerId: string; backingFile?: string };
  createdAt: string;
}

/**
 * A volume or snapshot served to clients (docs/daemon.md, "Exports"); the daemon starts every
 * export it finds at start-up, so exports outlive restarts (a front-end redials the same socket).
 */
export interface ExportRecord {
  id: string;
  type: 'nbd' | 'vhost-user';
  pool: string;
  volume: string;
  snapshot?: string;
  readOnly: boolean;
  /** NBD: the export name clients select ("pool/volume" or "pool/volume@snapshot"). */
  name?: string;
  /** vhost-user: the unix socket the front-end (QEMU) connects to. */
  socketPath?: string;
  /** vhost-user: virtqueues offered. */
  queueCount?: number;
  /** vhost-user: what a write the pool has no room for does (absent: the daemon's default). */
  onNoSpace?: 'wait' | 'error';
  createdAt: string;
}

/**
 * A volume name (and its size, for quotas) claimed while an import or copy creates the volume:
 * the claim lives in the catalog, so a second creator of the name (in this daemon or another) is
 * refused, and the claim turns into the volume record in the import's final transaction.
 */
export interface ReservationRecord {
  id: string;
  pool: string;
  name: string;
  sizeBytes: number;
  createdAt: string;
}

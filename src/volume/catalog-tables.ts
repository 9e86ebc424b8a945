/**
 * The volume layer's tables: the schema of each record kind (records.ts), the parse that checks
 * a stored value (a damaged one is CORRUPT naming its key), and the unique indexes the lookups
 * use. Relations that are not unique by themselves ("the layers backed by layer L") are indexes
 * whose value ends in the record's id, so that "the children of L" is a bounded read of the
 * prefix `layer.backing/L/`.
 */
import type { CatalogValue } from '../core/catalog-store.js';
import type { TableSchema } from '../meta/table.js';
import {
  count,
  flag,
  objects,
  oneOf,
  optional,
  optionalCount,
  optionalText,
  storedObject,
  text,
  texts,
  type StoredObject,
} from './record-parse.js';
import { CHUNK_HASH_ALGORITHMS, type DedupPoolConfig } from '../core/chunked-pools.js';
import { checkQosLimits } from './qos/limits.js';
import type {
  ExportRecord,
  FileRef,
  IntentRecord,
  JobRecord,
  LayerRecord,
  PoolRecord,
  QosPolicyRecord,
  QosSetting,
  ReservationRecord,
  SnapshotRecord,
  VolumeRecord,
} from './records.js';

export const poolSchema: TableSchema<PoolRecord> = {
  name: 'pool',
  id: (p) => p.name,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    const dedup = o['dedup'] === undefined ? undefined : parseDedupConfig(storedObject(o['dedup']));
    return {
      name: text(o, 'name'),
      ...optional('quotaBytes', optionalCount(o, 'quotaBytes')),
      ...optional('dedup', dedup),
      ...optional('qos', qosSetting(o)),
      createdAt: text(o, 'createdAt'),
    };
  },
  indexes: {
    /** "<policy>/<pool>": the pools whose default is a QoS policy (a policy in use is not deleted). */
    'qos-policy': (p) => (p.qos?.policy === undefined ? undefined : `${p.qos.policy}/${p.name}`),
  },
};

/** A record's `qos` field (absent: undefined); its limits are checked as a caller's are. */
function qosSetting(o: StoredObject): QosSetting | undefined {
  if (o['qos'] === undefined) return undefined;
  const qos = storedObject(o['qos']);
  const limits = qos['limits'] === undefined ? undefined : checkQosLimits(storedObject(qos['limits']));
  return { ...optional('limits', limits), ...optional('policy', optionalText(qos, 'policy')) };
}

export const qosPolicySchema: TableSchema<QosPolicyRecord> = {
  name: 'qos-policy',
  id: (p) => p.name,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    return { name: text(o, 'name'), limits: checkQosLimits(storedObject(o['limits'] ?? null)), createdAt: text(o, 'createdAt') };
  },
};

function parseDedupConfig(o: StoredObject): DedupPoolConfig {
  const tier = o['tier'] === undefined ? undefined : storedObject(o['tier']);
  return {
    hash: oneOf(o, 'hash', CHUNK_HASH_ALGORITHMS),
    ...optional(
      'tier',
      tier === undefined
        ? undefined
        : {
            url: text(tier, 'url'),
            ...optional('s3Endpoint', optionalText(tier, 's3Endpoint')),
            ...optional('s3Region', optionalText(tier, 's3Region')),
            ...optional('coolingMs', optionalCount(tier, 'coolingMs')),
          },
    ),
    ...optional('sealAfterMs', optionalCount(o, 'sealAfterMs')),
    ...optional('sealAboveBytes', optionalCount(o, 'sealAboveBytes')),
  };
}

export const volumeSchema: TableSchema<VolumeRecord> = {
  name: 'volume',
  id: (v) => v.id,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    const trash = o['trash'] === undefined ? undefined : storedObject(o['trash']);
    return {
      id: text(o, 'id'),
      pool: text(o, 'pool'),
      name: text(o, 'name'),
      sizeBytes: count(o, 'sizeBytes'),
      activeLayerId: text(o, 'activeLayerId'),
      ...optional('snapshotLimit', optionalCount(o, 'snapshotLimit')),
      ...optional('qos', qosSetting(o)),
      createdAt: text(o, 'createdAt'),
      ...optional('trash', trash === undefined ? undefined : { deletedAt: text(trash, 'deletedAt'), expiresAt: text(trash, 'expiresAt') }),
    };
  },
  indexes: {
    /** "<pool>/<name>" of the volumes in use (one pool's volumes: the prefix "<pool>/"); none for one in the trash. */
    name: (v) => (v.trash === undefined ? `${v.pool}/${v.name}` : undefined),
    /** "<pool>/<id>" of the volumes in the trash (one pool's trash: the prefix "<pool>/"). */
    trash: (v) => (v.trash === undefined ? undefined : `${v.pool}/${v.id}`),
    /** "<expiresAt>/<id>" of the volumes in the trash: the expired ones come first (ISO times sort as text). */
    expiry: (v) => (v.trash === undefined ? undefined : `${v.trash.expiresAt}/${v.id}`),
    /** "<policy>/<id>" of the volumes that attach a QoS policy (a policy in use is not deleted). */
    'qos-policy': (v) => (v.qos?.policy === undefined ? undefined : `${v.qos.policy}/${v.id}`),
  },
};

export const layerSchema: TableSchema<LayerRecord> = {
  name: 'layer',
  id: (l) => l.id,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    return {
      id: text(o, 'id'),
      pool: text(o, 'pool'),
      fileName: text(o, 'fileName'),
      ...optional('backingLayerId', optionalText(o, 'backingLayerId')),
      ownerVolumeId: text(o, 'ownerVolumeId'),
      frozen: flag(o, 'frozen'),
      ...(o['internal'] === true ? { internal: true as const } : {}),
      createdAt: text(o, 'createdAt'),
    };
  },
  indexes: {
    /** "<pool>/<file>": one file per layer; a pool's layers are the prefix "<pool>/". */
    file: (l) => `${l.pool}/${l.fileName}`,
    /** "<volume id>/<layer id>": the layers a volume owns (its active layer and its snapshots'). */
    owner: (l) => `${l.ownerVolumeId}/${l.id}`,
    /** "<backing layer id>/<layer id>": the layers whose backing file is a given layer. */
    backing: (l) => (l.backingLayerId === undefined ? undefined : `${l.backingLayerId}/${l.id}`),
  },
};

export const snapshotSchema: TableSchema<SnapshotRecord> = {
  name: 'snapshot',
  id: (s) => s.id,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    return {
      id: text(o, 'id'),
      volumeId: text(o, 'volumeId'),
      pool: text(o, 'pool'),
      name: text(o, 'name'),
      layerId: text(o, 'layerId'),
      sizeBytes: count(o, 'sizeBytes'),
      protected: flag(o, 'protected'),
      ...optional('groupSnapshotId', optionalText(o, 'groupSnapshotId')),
      createdAt: text(o, 'createdAt'),
    };
  },
  indexes: {
    /** "<volume id>/<name>": a volume's snapshots are the prefix "<volume id>/". */
    name: (s) => `${s.volumeId}/${s.name}`,
    /** The snapshot a (frozen) layer belongs to: a clone's parent. */
    layer: (s) => s.layerId,
  },
};

const JOB_KINDS = ['flatten', 'copy', 'import', 'export', 'snapshot-delete', 'seal', 'gc', 'scrub', 'evict', 'compact', 'bucket-purge'] as const;
const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;

export const jobSchema: TableSchema<JobRecord> = {
  name: 'job',
  id: (j) => j.id,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    const error = o['error'] === undefined ? undefined : storedObject(o['error']);
    return {
      id: text(o, 'id'),
      kind: oneOf(o, 'kind', JOB_KINDS),
      target: text(o, 'target'),
      state: oneOf(o, 'state', JOB_STATES),
      doneBytes: count(o, 'doneBytes'),
      totalBytes: count(o, 'totalBytes'),
      ...optional('error', error === undefined ? undefined : { code: text(error, 'code'), message: text(error, 'message') }),
      createdAt: text(o, 'createdAt'),
      ...optional('finishedAt', optionalText(o, 'finishedAt')),
    };
  },
};

function fileRef(ref: StoredObject): FileRef {
  return { pool: text(ref, 'pool'), fileName: text(ref, 'fileName') };
}

function fileRefs(o: StoredObject, field: string): FileRef[] {
  return objects(o, field).map(fileRef);
}

export const intentSchema: TableSchema<IntentRecord> = {
  name: 'intent',
  id: (i) => i.id,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    const resize = o['resize'] === undefined ? undefined : storedObject(o['resize']);
    const seal = o['seal'] === undefined ? undefined : storedObject(o['seal']);
    const compact = o['compact'] === undefined ? undefined : storedObject(o['compact']);
    return {
      id: text(o, 'id'),
      kind: text(o, 'kind'),
      phase: oneOf(o, 'phase', ['prepared', 'committed'] as const),
      target: text(o, 'target'),
      createFiles: fileRefs(o, 'createFiles'),
      deleteFiles: fileRefs(o, 'deleteFiles'),
      rebaseLayerIds: texts(o, 'rebaseLayerIds'),
      writeLayerIds: texts(o, 'writeLayerIds'),
      ...optional(
        'resize',
        resize === undefined
          ? undefined
          : {
              volumeId: text(resize, 'volumeId'),
              layerId: text(resize, 'layerId'),
              fromBytes: count(resize, 'fromBytes'),
              toBytes: count(resize, 'toBytes'),
            },
      ),
      ...optional('seal', seal === undefined ? undefined : { layerId: text(seal, 'layerId'), file: fileRef(storedObject(seal['file'] ?? null)) }),
      ...optional(
        'compact',
        compact === undefined
          ? undefined
          : {
              volumeId: text(compact, 'volumeId'),
              upperLayerId: text(compact, 'upperLayerId'),
              lowerLayerId: text(compact, 'lowerLayerId'),
              ...optional('backingFile', optionalText(compact, 'backingFile')),
            },
      ),
      createdAt: text(o, 'createdAt'),
    };
  },
};

export const exportSchema: TableSchema<ExportRecord> = {
  name: 'export',
  id: (e) => e.id,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    return {
      id: text(o, 'id'),
      type: oneOf(o, 'type', ['nbd', 'vhost-user'] as const),
      pool: text(o, 'pool'),
      volume: text(o, 'volume'),
      ...optional('snapshot', optionalText(o, 'snapshot')),
      readOnly: flag(o, 'readOnly'),
      ...optional('name', optionalText(o, 'name')),
      ...optional('socketPath', optionalText(o, 'socketPath')),
      ...optional('queueCount', optionalCount(o, 'queueCount')),
      ...optional('onNoSpace', o['onNoSpace'] === undefined ? undefined : oneOf(o, 'onNoSpace', ['wait', 'error'] as const)),
      createdAt: text(o, 'createdAt'),
    };
  },
  indexes: {
    /** The NBD export name clients select: one export per name. */
    'nbd-name': (e) => (e.type === 'nbd' ? e.name : undefined),
    /** The vhost-user socket: one export per socket. */
    socket: (e) => e.socketPath,
  },
};

export const reservationSchema: TableSchema<ReservationRecord> = {
  name: 'reservation',
  id: (r) => r.id,
  parse: (value: CatalogValue) => {
    const o = storedObject(value);
    return { id: text(o, 'id'), pool: text(o, 'pool'), name: text(o, 'name'), sizeBytes: count(o, 'sizeBytes'), createdAt: text(o, 'createdAt') };
  },
  /** "<pool>/<name>", like the volume table's name index: a pool's claims are the prefix "<pool>/". */
  indexes: { name: (r) => `${r.pool}/${r.name}` },
};

/**
 * JSON schemas of the REST API (request validation, response serialization and the OpenAPI
 * document), the TypeScript types of the JSON they describe (FromSchema: the schema is the one
 * source; the CLI reads responses through these types), and the mappers from the volume
 * service's records to their JSON form (undefined becomes null, so every documented field is
 * present), checked against those types.
 */
import type { FromSchema } from 'json-schema-to-ts';
import { CHUNK_HASH_ALGORITHMS } from '../../core/chunked-pools.js';
import type { DiffExtent, DuEntry, JobInfo, PoolDf, PoolGcReport, PoolInfo, SnapshotInfo, TrashEntry, VolumeEvictReport, VolumeInfo } from '../../volume/types.js';

/** Pool, volume and snapshot names: no '/', '@' or spaces, so "pool/vol@snap" is unambiguous. */
export const NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';

export const nameSchema = { type: 'string', pattern: NAME_PATTERN, description: '1 to 128 letters, digits, . _ -, starting with a letter or digit' } as const;
const bytes = { type: 'integer', minimum: 0 } as const;
const nullableBytes = { type: ['integer', 'null'], minimum: 0 } as const;
const isoTime = { type: 'string', description: 'ISO-8601 time' } as const;
const chunkHash = { type: 'string', enum: CHUNK_HASH_ALGORITHMS, description: 'what names chunks: blake3 (default) or xxh128 (byte compare before sharing)' } as const;
const location = {
  type: ['string', 'null'],
  description: "where an operator finds it on this host (a local pool's file or folder); null for stores without local files",
} as const;

export const errorSchema = {
  $id: 'Error',
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string' },
        message: { type: 'string', description: 'what was wrong' },
        hint: { type: 'string', description: 'what to do about it, in this API\'s terms (when the daemon knows a fix)' },
        fix: {
          type: 'object',
          description: 'the same remedy as data: {text, option}, {text, operation, pool?, volume?, snapshot?, group?, exports?} or {text, literal: true} (docs/daemon.md); "{}" in text marks where the option or operation goes (a literal fix has none: it reads the same everywhere)',
          required: ['text'],
          properties: { text: { type: 'string' }, option: { type: 'string' }, operation: { type: 'string' }, literal: { type: 'boolean' } },
        },
      },
    },
  },
} as const;

export const poolSchema = {
  $id: 'Pool',
  type: 'object',
  required: ['name', 'location', 'quotaBytes', 'volumeCount', 'provisionedBytes', 'allocatedBytes', 'kind', 'dedup', 'createdAt'],
  properties: {
    name: { type: 'string' },
    location,
    quotaBytes: nullableBytes,
    volumeCount: bytes,
    provisionedBytes: bytes,
    allocatedBytes: bytes,
    kind: { type: 'string', enum: ['local', 'dedup'], description: "local: plain qcow2 chains; dedup: sealed layers are chunk manifests" },
    dedup: {
      type: ['object', 'null'],
      description: "a dedup pool's configuration; null for a local pool",
      required: ['hash', 'tier', 'tierActive'],
      additionalProperties: false,
      properties: {
        hash: chunkHash,
        tier: {
          type: ['object', 'null'],
          required: ['url', 's3Endpoint', 's3Region', 'coolingMs'],
          additionalProperties: false,
          properties: {
            url: { type: 'string', description: 's3://BUCKET/PREFIX or file:///path' },
            s3Endpoint: { type: ['string', 'null'] },
            s3Region: { type: ['string', 'null'] },
            coolingMs: { type: ['integer', 'null'], minimum: 0 },
          },
        },
        tierActive: { type: 'boolean', description: 'true when packs move to the tier; false: recorded only (a daemon without tiering)' },
        sealAfterMs: { type: 'integer', minimum: 0, description: 'seal policy: an active layer not written for this long is frozen and sealed (absent: off)' },
        sealAboveBytes: { type: 'integer', minimum: 0, description: 'seal policy: an active layer allocating more than this is frozen and sealed (absent: off)' },
        tierError: { type: 'string', description: 'the last failure to reach the tier; absent while it answers' },
      },
    },
    createdAt: isoTime,
  },
} as const;

/** POST /v1/pools: a local pool, or with `dedup` a dedup pool (its tier is checked and recorded). */
export const poolCreateBodySchema = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: {
    name: nameSchema,
    quotaBytes: { type: 'integer', minimum: 0 },
    dedup: {
      type: 'object',
      additionalProperties: false,
      properties: {
        hash: chunkHash,
        sealAfterMs: { type: 'integer', minimum: 0, description: 'seal policy: freeze and seal an active layer not written for this long (at least 1000)' },
        sealAboveBytes: { type: 'integer', minimum: 0, description: 'seal policy: freeze and seal an active layer allocating more than this (at least 1 MiB)' },
        tier: {
          type: 'object',
          required: ['url'],
          additionalProperties: false,
          properties: {
            url: { type: 'string', description: 's3://BUCKET/PREFIX or file:///absolute/path (no credentials: S3 uses the AWS default chain)' },
            s3Endpoint: { type: 'string', description: 'an S3-compatible server, http(s)://HOST[:PORT]' },
            s3Region: { type: 'string' },
            coolingMs: { type: 'integer', minimum: 0, description: 'how long a pack goes unread before it moves to the tier' },
          },
        },
      },
    },
  },
} as const;

export const poolDfSchema = {
  $id: 'PoolDf',
  type: 'object',
  required: [
    'pool', 'kind', 'volumeCount', 'logicalProvisionedBytes', 'logicalAllocatedBytes', 'physicalBytes', 'layerFileBytes', 'packBytes',
    'packLocalBytes', 'packRemoteBytes', 'localBytes', 'remoteBytes', 'uniqueChunkCount', 'uniqueChunkBytes', 'referencedChunkBytes', 'dedupRatio',
  ],
  properties: {
    pool: { type: 'string' },
    kind: { type: 'string', enum: ['local', 'dedup'] },
    volumeCount: bytes,
    logicalProvisionedBytes: bytes,
    logicalAllocatedBytes: bytes,
    physicalBytes: bytes,
    layerFileBytes: bytes,
    packBytes: bytes,
    packLocalBytes: bytes,
    packRemoteBytes: bytes,
    localBytes: bytes,
    remoteBytes: bytes,
    uniqueChunkCount: bytes,
    uniqueChunkBytes: bytes,
    referencedChunkBytes: bytes,
    dedupRatio: { type: ['number', 'null'], description: 'referencedChunkBytes / uniqueChunkBytes; null with no chunk stored or for a local pool' },
    tierError: { type: 'string', description: "a tiered pool's last failure to reach its tier; absent while it answers" },
  },
} as const;

export const poolGcSchema = {
  $id: 'PoolGc',
  type: 'object',
  required: ['pool', 'jobId', 'graceMs', 'chunksForgotten', 'packsDeleted', 'orphanPacksDeleted', 'packsRewritten', 'bytesDeleted', 'chunksWaiting', 'bytesWaiting', 'waitingUntilMs', 'damaged'],
  properties: {
    pool: { type: 'string' },
    jobId: { type: 'string' },
    graceMs: bytes,
    chunksForgotten: bytes,
    packsDeleted: bytes,
    orphanPacksDeleted: bytes,
    packsRewritten: bytes,
    bytesDeleted: bytes,
    chunksWaiting: { type: 'integer', minimum: 0, description: 'unreferenced chunks still inside the grace period: a later gc (or one with a shorter grace) frees them' },
    bytesWaiting: { type: 'integer', minimum: 0, description: 'their stored bytes' },
    waitingUntilMs: { type: ['integer', 'null'], description: 'when the last of them leaves the grace period (ms since the epoch); null with none waiting' },
    damaged: { type: 'array', items: { type: 'string' } },
  },
} as const;

export const volumeEvictSchema = {
  $id: 'VolumeEvict',
  type: 'object',
  required: ['pool', 'volume', 'jobId', 'layerCount', 'packCount', 'sharedPackCount', 'movedPacks', 'movedBytes', 'alreadyColdPacks', 'failed'],
  properties: {
    pool: { type: 'string' },
    volume: { type: 'string' },
    jobId: { type: 'string' },
    layerCount: { ...bytes, description: "the volume's sealed layers looked at" },
    packCount: { ...bytes, description: 'packs holding their chunks' },
    sharedPackCount: { ...bytes, description: "of packCount: packs also holding other volumes' chunks (they moved too)" },
    movedPacks: bytes,
    movedBytes: bytes,
    alreadyColdPacks: bytes,
    failed: {
      type: 'array',
      description: 'packs that stayed local (the next evict or cooling pass retries them)',
      items: { type: 'object', required: ['pack', 'error'], properties: { pack: { type: 'string' }, error: { type: 'string' } } },
    },
  },
} as const;

export type VolumeEvictJson = FromSchema<typeof volumeEvictSchema>;

export function volumeEvictJson(jobId: string, r: VolumeEvictReport): VolumeEvictJson {
  return { ...r, jobId, failed: r.failed.map((f) => ({ ...f })) };
}

const parentSchema = {
  type: ['object', 'null'],
  properties: { pool: { type: 'string' }, volume: { type: 'string' }, snapshot: { type: 'string' } },
} as const;

export const volumeSchema = {
  $id: 'Volume',
  type: 'object',
  required: ['id', 'pool', 'name', 'provisionedBytes', 'allocatedBytes', 'snapshotCount', 'parent', 'chainDepth', 'location', 'snapshotLimit', 'createdAt'],
  properties: {
    id: { type: 'string' },
    pool: { type: 'string' },
    name: { type: 'string' },
    provisionedBytes: bytes,
    allocatedBytes: bytes,
    snapshotCount: bytes,
    parent: parentSchema,
    chainDepth: bytes,
    location,
    snapshotLimit: { type: ['integer', 'null'] },
    createdAt: isoTime,
  },
} as const;

export const snapshotSchema = {
  $id: 'Snapshot',
  type: 'object',
  required: ['id', 'pool', 'volume', 'name', 'sizeBytes', 'protected', 'children', 'location', 'createdAt'],
  properties: {
    id: { type: 'string' },
    pool: { type: 'string' },
    volume: { type: 'string' },
    name: { type: 'string' },
    sizeBytes: bytes,
    protected: { type: 'boolean' },
    children: { type: 'array', items: { type: 'string' } },
    location,
    createdAt: isoTime,
  },
} as const;

export const jobSchema = {
  $id: 'Job',
  type: 'object',
  required: ['id', 'kind', 'target', 'state', 'doneBytes', 'totalBytes', 'error', 'createdAt', 'finishedAt'],
  properties: {
    id: { type: 'string' },
    kind: { type: 'string', enum: ['flatten', 'copy', 'import', 'export', 'snapshot-delete', 'seal', 'gc', 'scrub', 'evict', 'compact', 'bucket-purge'] },
    target: { type: 'string' },
    state: { type: 'string', enum: ['queued', 'running', 'succeeded', 'failed', 'cancelled'] },
    doneBytes: bytes,
    totalBytes: bytes,
    error: {
      type: ['object', 'null'],
      required: ['code', 'message'],
      properties: { code: { type: 'string' }, message: { type: 'string' } },
    },
    createdAt: isoTime,
    finishedAt: { type: ['string', 'null'] },
  },
} as const;

export const duEntrySchema = {
  $id: 'DuEntry',
  type: 'object',
  required: ['name', 'provisionedBytes', 'allocatedBytes'],
  properties: { name: { type: 'string' }, provisionedBytes: bytes, allocatedBytes: bytes },
} as const;

export const diffExtentSchema = {
  $id: 'DiffExtent',
  type: 'object',
  required: ['offset', 'length', 'kind'],
  properties: { offset: bytes, length: bytes, kind: { type: 'string', enum: ['data', 'zero'] } },
} as const;

export const trashEntrySchema = {
  $id: 'TrashEntry',
  type: 'object',
  description: "a volume in its pool's trash: purged at expiresAt unless restored",
  required: ['id', 'pool', 'name', 'sizeBytes', 'snapshotCount', 'deletedAt', 'expiresAt'],
  properties: {
    id: { type: 'string', description: 'the volume id: what restore and purge take' },
    pool: { type: 'string' },
    name: { type: 'string', description: 'the name it had when it was deleted' },
    sizeBytes: bytes,
    snapshotCount: bytes,
    deletedAt: isoTime,
    expiresAt: isoTime,
  },
} as const;

export const statusSchema = {
  $id: 'Status',
  type: 'object',
  required: ['status', 'version', 'pid', 'dataDir', 'uptimeSeconds', 'pools', 'volumes', 'jobsRunning', 'nbd', 'exports'],
  properties: {
    status: { type: 'string' },
    version: { type: 'string' },
    pid: { type: 'integer' },
    dataDir: { type: 'string' },
    uptimeSeconds: { type: 'number' },
    pools: { type: 'array', items: { type: 'string' } },
    volumes: { type: 'integer' },
    jobsRunning: { type: 'integer' },
    nbd: {
      type: 'object',
      required: ['listen', 'socket'],
      properties: { listen: { type: ['string', 'null'] }, socket: { type: ['string', 'null'] } },
    },
    exports: { type: 'array', items: { $ref: 'Export#' } },
  },
} as const;

export const exportSchema = {
  $id: 'Export',
  type: 'object',
  required: ['id', 'type', 'pool', 'volume', 'snapshot', 'readOnly', 'name', 'uris', 'socketPath', 'queueCount', 'createdAt', 'clients', 'connectedSince', 'onNoSpace', 'waitingForSpace'],
  properties: {
    id: { type: 'string' },
    type: { type: 'string', enum: ['nbd', 'vhost-user'] },
    pool: { type: 'string' },
    volume: { type: 'string' },
    snapshot: { type: ['string', 'null'] },
    readOnly: { type: 'boolean' },
    name: { type: ['string', 'null'], description: 'NBD export name' },
    uris: { type: 'array', items: { type: 'string' }, description: 'NBD URIs (TCP, unix socket)' },
    socketPath: { type: ['string', 'null'], description: 'vhost-user socket' },
    queueCount: { type: ['integer', 'null'] },
    createdAt: isoTime,
    clients: {
      type: 'integer',
      minimum: 0,
      description: 'Clients using the export now: NBD connections that selected it; vhost-user 1 while a front-end (QEMU) is connected, else 0',
    },
    connectedSince: { type: ['string', 'null'], format: 'date-time', description: 'vhost-user: when the connected front-end connected; null when none is, and for NBD' },
    onNoSpace: {
      type: ['string', 'null'],
      enum: ['wait', 'error', null],
      description: "vhost-user: what a guest's write the pool has no room for does: 'wait' until space is freed, or 'error' (IOERR at once); null for NBD (the client gets ENOSPC)",
    },
    waitingForSpace: { type: 'integer', minimum: 0, description: "Guest requests waiting for space now (the pool is full; policy 'wait'); free space to let them complete" },
  },
} as const;

export type PoolJson = FromSchema<typeof poolSchema>;
export type PoolCreateBody = FromSchema<typeof poolCreateBodySchema>;
export type PoolDfJson = FromSchema<typeof poolDfSchema>;
export type PoolGcJson = FromSchema<typeof poolGcSchema>;
export type VolumeJson = FromSchema<typeof volumeSchema>;
export type SnapshotJson = FromSchema<typeof snapshotSchema>;
export type JobJson = FromSchema<typeof jobSchema>;
export type DuEntryJson = FromSchema<typeof duEntrySchema>;
export type DiffExtentJson = FromSchema<typeof diffExtentSchema>;
export type ExportJson = FromSchema<typeof exportSchema>;
export type TrashEntryJson = FromSchema<typeof trashEntrySchema>;
export type StatusJson = FromSchema<typeof statusSchema, { references: [typeof exportSchema] }>;
export type ErrorJson = FromSchema<typeof errorSchema>;

export const SHARED_SCHEMAS = [errorSchema, poolSchema, poolDfSchema, poolGcSchema, volumeEvictSchema, volumeSchema, snapshotSchema, jobSchema, duEntrySchema, diffExtentSchema, statusSchema, exportSchema, trashEntrySchema];

export const ref = (id: string) => ({ $ref: `${id}#` }) as const;
export const listOf = (id: string) => ({ type: 'array', items: { $ref: `${id}#` } }) as const;

/** The error responses every /v1 route can give. */
export const errorResponses = {
  400: ref('Error'),
  401: ref('Error'),
  404: ref('Error'),
  409: ref('Error'),
  422: ref('Error'),
  500: ref('Error'),
  501: ref('Error'),
  503: ref('Error'),
  507: ref('Error'),
} as const;

export function poolJson(p: PoolInfo): PoolJson {
  const tier = p.dedup?.tier;
  return {
    ...p,
    location: p.location ?? null,
    quotaBytes: p.quotaBytes ?? null,
    dedup:
      p.dedup === undefined
        ? null
        : {
            hash: p.dedup.hash,
            tierActive: p.dedup.tierActive,
            ...(p.dedup.tierError === undefined ? {} : { tierError: p.dedup.tierError }),
            ...(p.dedup.sealAfterMs === undefined ? {} : { sealAfterMs: p.dedup.sealAfterMs }),
            ...(p.dedup.sealAboveBytes === undefined ? {} : { sealAboveBytes: p.dedup.sealAboveBytes }),
            tier:
              tier === undefined
                ? null
                : { url: tier.url, s3Endpoint: tier.s3Endpoint ?? null, s3Region: tier.s3Region ?? null, coolingMs: tier.coolingMs ?? null },
          },
  };
}

export function poolDfJson(d: PoolDf): PoolDfJson {
  return { ...d, dedupRatio: d.dedupRatio ?? null };
}

export function poolGcJson(jobId: string, r: PoolGcReport): PoolGcJson {
  return { ...r, jobId, damaged: [...r.damaged] };
}

export function volumeJson(v: VolumeInfo): VolumeJson {
  return { ...v, location: v.location ?? null, parent: v.parent ?? null, snapshotLimit: v.snapshotLimit ?? null };
}

export function snapshotJson(s: SnapshotInfo): SnapshotJson {
  return { ...s, location: s.location ?? null };
}

export function jobJson(j: JobInfo): JobJson {
  return { ...j, error: j.error ?? null, finishedAt: j.finishedAt ?? null };
}

export function duJson(e: DuEntry): DuEntryJson {
  return { ...e };
}

export function trashJson(e: TrashEntry): TrashEntryJson {
  return { ...e };
}

export function extentJson(e: DiffExtent): DiffExtentJson {
  return { ...e };
}

export const TERMINAL_JOB_STATES: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled']);

/**
 * JSON schemas of POST /v1/pools/{pool}/volumes/{vol}/seal and .../compact (dedup pools: freezing
 * the active layer, merging internal sealed layers; docs/dedup.md "Policy sealing and compaction").
 * Kept beside schemas.ts (same conventions: the schema is the one source of the type the CLI reads).
 */
import type { FromSchema } from 'json-schema-to-ts';
import type { VolumeCompactReport, VolumeSealReport } from '../../volume/types.js';

const count = { type: 'integer', minimum: 0 } as const;

export const volumeSealSchema = {
  type: 'object',
  required: ['pool', 'volume', 'frozenLayerId', 'sealJobId', 'chainDepth'],
  additionalProperties: false,
  properties: {
    pool: { type: 'string' },
    volume: { type: 'string' },
    frozenLayerId: { type: 'string', description: 'the frozen (former active) layer, now an internal layer' },
    sealJobId: { type: ['string', 'null'], description: "the seal job started for it (see 'job list')" },
    chainDepth: { ...count, description: "the chain's depth after the freeze" },
  },
} as const;

export type VolumeSealJson = FromSchema<typeof volumeSealSchema>;

export function volumeSealJson(r: VolumeSealReport): VolumeSealJson {
  return { ...r };
}

export const volumeCompactSchema = {
  type: 'object',
  required: ['pool', 'volume', 'jobId', 'mergedPairs', 'chainDepthBefore', 'chainDepthAfter'],
  additionalProperties: false,
  properties: {
    pool: { type: 'string' },
    volume: { type: 'string' },
    jobId: { type: 'string' },
    mergedPairs: { ...count, description: 'pairs of adjacent internal sealed layers merged into one' },
    chainDepthBefore: count,
    chainDepthAfter: count,
  },
} as const;

export type VolumeCompactJson = FromSchema<typeof volumeCompactSchema>;

export function volumeCompactJson(jobId: string, r: VolumeCompactReport): VolumeCompactJson {
  return { ...r, jobId };
}

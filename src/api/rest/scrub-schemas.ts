/**
 * JSON schema of POST /v1/pools/{pool}/scrub's answer: the scrub's report as the repository made
 * it (src/core/scrub-report.ts, docs/dedup.md) and the owners of the layers it names. Kept beside
 * schemas.ts (same conventions: the schema is the one source of the TypeScript type the CLI reads).
 */
import type { FromSchema } from 'json-schema-to-ts';
import { SCRUB_PROBLEM_KINDS } from '../../core/scrub-report.js';
import type { JobInfo, PoolScrubReport } from '../../volume/types.js';

const count = { type: 'integer', minimum: 0 } as const;

const problemSchema = {
  type: 'object',
  required: ['kind', 'subject', 'message', 'repaired'],
  properties: {
    kind: { type: 'string', enum: SCRUB_PROBLEM_KINDS },
    subject: { type: 'string', description: 'a chunk hash, a pack id or a layer ("layer <pool>/<file>")' },
    message: { type: 'string', description: 'what is wrong, what was or would be done' },
    repaired: { type: 'boolean' },
    holders: { type: 'array', items: { type: 'string' }, description: 'for a lost chunk: the layers that name it (the first few)' },
  },
} as const;

const reportSchema = {
  type: 'object',
  required: [
    'repair', 'clean', 'chunks', 'chunkBytes', 'packs', 'packBytes', 'holders', 'references', 'problemCount', 'repaired',
    'unrecoverable', 'changedDuringScrub', 'problemsByKind', 'problems', 'problemsOmitted',
  ],
  properties: {
    repair: { type: 'boolean' },
    clean: { type: 'boolean', description: 'nothing found but notices (pack-orphan, spare-copy-corrupt)' },
    chunks: count,
    chunkBytes: count,
    packs: count,
    packBytes: count,
    holders: count,
    references: count,
    problemCount: count,
    repaired: count,
    unrecoverable: count,
    changedDuringScrub: count,
    problemsByKind: { type: 'object', additionalProperties: count },
    problems: { type: 'array', items: problemSchema },
    problemsOmitted: count,
  },
} as const;

const layerOwnerSchema = {
  type: 'object',
  required: ['holder', 'layer', 'volume', 'snapshot', 'role'],
  properties: {
    holder: { type: 'string' },
    layer: { type: 'string', description: 'the layer file' },
    volume: { type: ['string', 'null'], description: 'the volume that owns the layer (null: no layer has that file any more)' },
    snapshot: { type: ['string', 'null'] },
    role: { type: 'string', enum: ['active', 'snapshot', 'base', 'internal', 'unknown'] },
  },
} as const;

export const poolScrubSchema = {
  type: 'object',
  required: ['pool', 'jobId', 'report', 'layers'],
  properties: {
    pool: { type: 'string' },
    jobId: { type: 'string' },
    report: reportSchema,
    layers: { type: 'array', items: layerOwnerSchema, description: 'the layers the report names and their volumes and snapshots' },
  },
} as const;

export type PoolScrubJson = FromSchema<typeof poolScrubSchema>;

export function poolScrubJson(job: JobInfo, r: PoolScrubReport): PoolScrubJson {
  return {
    pool: r.pool,
    jobId: job.id,
    report: {
      ...r.report,
      problems: r.report.problems.map(({ holders, ...p }) => ({ ...p, ...(holders === undefined ? {} : { holders: [...holders] }) })),
    },
    layers: r.layers.map((l) => ({ ...l, volume: l.volume ?? null, snapshot: l.snapshot ?? null })),
  };
}

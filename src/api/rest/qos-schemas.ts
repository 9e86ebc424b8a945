/**
 * JSON schemas of the QoS routes (issue 15; docs/qos.md): limits, a volume's or pool's QoS,
 * policies; their TypeScript types (the CLI reads responses through them) and the mappers.
 */
import type { FromSchema } from 'json-schema-to-ts';
import { MAX_BURST_SECONDS, type QosLimits } from '../../volume/qos/limits.js';
import type { QosInfo, QosPolicyInfo } from '../../volume/qos/types.js';
import { nameSchema } from './schemas.js';

const perSecond = (what: string) => ({ type: 'integer', minimum: 1, description: what }) as const;

const limitProperties = {
  readIops: perSecond('reads per second'),
  writeIops: perSecond('writes per second (write zeroes and discards count as writes; flushes do not count)'),
  totalIops: perSecond('reads and writes per second together'),
  readBps: perSecond('bytes read per second'),
  writeBps: perSecond('bytes written per second (write zeroes and discards move none)'),
  totalBps: perSecond('bytes read and written per second together'),
  readIopsBurst: perSecond('burst rate above readIops (needs readIops)'),
  writeIopsBurst: perSecond('burst rate above writeIops'),
  totalIopsBurst: perSecond('burst rate above totalIops'),
  readBpsBurst: perSecond('burst rate above readBps'),
  writeBpsBurst: perSecond('burst rate above writeBps'),
  totalBpsBurst: perSecond('burst rate above totalBps'),
  burstSeconds: { type: 'integer', minimum: 1, maximum: MAX_BURST_SECONDS, description: 'how long an idle volume may run at its burst rates (default 1)' },
} as const;

export const qosLimitsSchema = {
  type: 'object',
  additionalProperties: false,
  properties: limitProperties,
  description: 'limits per second; an absent field is no limit',
} as const;

const nullable = <T extends object>(schema: T) => ({ ...schema, type: ['integer', 'null'] }) as const;

/** A change: a number sets a limit, null removes it, an absent field stays as it is. */
const limitChangeSchema = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: Object.fromEntries(Object.entries(limitProperties).map(([k, v]) => [k, nullable(v)])) as { [K in keyof typeof limitProperties]: ReturnType<typeof nullable<(typeof limitProperties)[K]>> },
  description: 'limits to change: a number sets one, null removes it (and a rate\'s burst with it), an absent field stays; null here removes them all',
} as const;

export const qosChangeBodySchema = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    limits: limitChangeSchema,
    policy: { anyOf: [nameSchema, { type: 'null' }], description: 'a QoS policy to attach (null detaches it)' },
  },
} as const;

export const qosInfoSchema = {
  type: 'object',
  required: ['limits', 'policy', 'effective', 'source', 'sourcePolicy'],
  properties: {
    limits: { ...qosLimitsSchema, type: ['object', 'null'], description: 'its own limits (null: none)' },
    policy: { type: ['string', 'null'], description: 'its attached policy (null: none)' },
    effective: { ...qosLimitsSchema, type: ['object', 'null'], description: 'the limits that apply (null: none)' },
    source: {
      type: 'string',
      enum: ['volume', 'volume-policy', 'pool', 'pool-policy', 'none'],
      description: "where the effective limits come from: the volume's own limits, its policy, the pool's own limits, the pool's policy",
    },
    sourcePolicy: { type: ['string', 'null'], description: 'the policy the effective limits are (for the *-policy sources)' },
  },
} as const;

export type QosInfoJson = FromSchema<typeof qosInfoSchema>;

export const qosPolicySchema = {
  type: 'object',
  required: ['name', 'limits', 'volumeCount', 'poolCount', 'createdAt'],
  properties: {
    name: { type: 'string' },
    limits: qosLimitsSchema,
    volumeCount: { type: 'integer', minimum: 0, description: 'volumes attaching it (those in the trash too)' },
    poolCount: { type: 'integer', minimum: 0, description: 'pools whose default it is' },
    createdAt: { type: 'string', description: 'ISO-8601 time' },
  },
} as const;

export type QosPolicyJson = FromSchema<typeof qosPolicySchema>;

export const qosPolicyCreateBodySchema = {
  type: 'object',
  required: ['name', 'limits'],
  additionalProperties: false,
  properties: { name: nameSchema, limits: qosLimitsSchema },
} as const;

function limitsJson(limits: QosLimits | undefined): QosLimits | null {
  return limits === undefined ? null : { ...limits };
}

export function qosInfoJson(q: QosInfo): QosInfoJson {
  return { limits: limitsJson(q.limits), policy: q.policy ?? null, effective: limitsJson(q.effective), source: q.source, sourcePolicy: q.sourcePolicy ?? null };
}

export function qosPolicyJson(p: QosPolicyInfo): QosPolicyJson {
  return { name: p.name, limits: { ...p.limits }, volumeCount: p.volumeCount, poolCount: p.poolCount, createdAt: p.createdAt };
}

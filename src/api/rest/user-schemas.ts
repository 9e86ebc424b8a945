/**
 * JSON schemas of the S3 user routes (/v1/users): users and their access keys. Kept beside
 * schemas.ts (same conventions: the schema is the one source of the TypeScript type).
 */
import type { FromSchema } from 'json-schema-to-ts';
import type { AccessKeyInfo, UserRecord } from '../../objects/users/user-store.js';

const isoTime = { type: 'string', description: 'ISO-8601 time' } as const;

export const userSchema = {
  $id: 'User',
  type: 'object',
  required: ['name', 'createdAt'],
  properties: { name: { type: 'string' }, createdAt: isoTime },
} as const;

export const accessKeySchema = {
  $id: 'AccessKey',
  type: 'object',
  required: ['id', 'owner', 'createdAt', 'status'],
  properties: {
    id: { type: 'string', description: 'the access key id clients sign with' },
    owner: { type: 'string', description: 'the user it belongs to' },
    createdAt: isoTime,
    status: { type: 'string', enum: ['active', 'inactive'] },
  },
} as const;

export const userDetailSchema = {
  $id: 'UserDetail',
  type: 'object',
  required: ['name', 'createdAt', 'keys'],
  properties: { name: { type: 'string' }, createdAt: isoTime, keys: { type: 'array', items: { $ref: 'AccessKey#' } } },
} as const;

export const accessKeyCreatedSchema = {
  $id: 'AccessKeyCreated',
  type: 'object',
  required: ['id', 'owner', 'createdAt', 'status', 'secret'],
  properties: {
    id: { type: 'string' },
    owner: { type: 'string' },
    createdAt: isoTime,
    status: { type: 'string', enum: ['active', 'inactive'] },
    secret: { type: 'string', description: 'the secret access key: returned this once, never again' },
  },
} as const;

export type UserJson = FromSchema<typeof userSchema>;
export type AccessKeyJson = FromSchema<typeof accessKeySchema>;
export type UserDetailJson = FromSchema<typeof userDetailSchema, { references: [typeof accessKeySchema] }>;
export type AccessKeyCreatedJson = FromSchema<typeof accessKeyCreatedSchema>;

export const USER_SCHEMAS = [userSchema, accessKeySchema, userDetailSchema, accessKeyCreatedSchema];

export function userJson(u: UserRecord): UserJson {
  return { name: u.name, createdAt: u.createdAt };
}

export function accessKeyJson(k: AccessKeyInfo): AccessKeyJson {
  return { id: k.id, owner: k.owner, createdAt: k.createdAt, status: k.status };
}

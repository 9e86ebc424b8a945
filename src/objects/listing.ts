/**
 * ListObjectsV2, ListObjects (V1), ListObjectVersions and ListMultipartUploads over the catalog,
 * each a rollup walk (rollup.ts) over one bounded key range:
 *   objects   s3-current/<bucketId>/<prefix>...   (only keys whose newest version is an object)
 *   versions  s3-version/<bucketId>/<prefix>...   (every version and delete marker, newest first)
 *   uploads   s3-upload.key/<bucketId>/<prefix>...
 * A continuation token is the base64url of the catalog position to continue behind; it names no
 * bucket internals a client could use (a token from another bucket lists nothing it may not see).
 */
import type { Table } from '../meta/table.js';
import type { ObjectContext } from './context.js';
import { ObjectError } from './errors.js';
import type { ObjectVersionRecord, UploadRecord } from './records.js';
import { afterEveryStartingWith, checkMaxKeys, rollup, type RollupItem, type RollupSource } from './rollup.js';
import { KEY_END } from './tables.js';
import { findVersion } from './versions.js';

export interface ListObjectsRequest {
  readonly bucket: string;
  readonly prefix?: string;
  readonly delimiter?: string;
  readonly maxKeys?: number;
}

export interface ListObjectsPage {
  readonly objects: ObjectVersionRecord[];
  readonly commonPrefixes: string[];
  readonly isTruncated: boolean;
}

/** A source over a table whose ids are `<bucketId>/<key><KEY_END>...` (current and versions). */
function keyedSource(table: Table<ObjectVersionRecord>, bucketId: string, prefix: string): RollupSource<ObjectVersionRecord> {
  const base = `${bucketId}/`;
  return {
    async page(after, limit) {
      const page = await table.prefixPage(`${base}${prefix}`, { limit, ...(after === undefined ? {} : { after: `${base}${after}` }) });
      const entries = page.records.map(({ record }) => ({ key: record.key, position: table.schema.id(record).slice(base.length), record }));
      return { entries, more: page.nextAfter !== undefined };
    },
    positionAfterPrefix: (keyPrefix) => afterEveryStartingWith(keyPrefix),
  };
}

function split<R>(items: RollupItem<R>[]): { records: R[]; commonPrefixes: string[] } {
  const records: R[] = [];
  const commonPrefixes: string[] = [];
  for (const item of items) {
    if (item.kind === 'entry') records.push(item.entry.record);
    else commonPrefixes.push(item.prefix);
  }
  return { records, commonPrefixes };
}

function lastName<R extends { key: string }>(items: RollupItem<R>[]): string | undefined {
  const last = items.at(-1);
  return last === undefined ? undefined : last.kind === 'entry' ? last.entry.record.key : last.prefix;
}

export function encodeContinuationToken(position: string): string {
  return Buffer.from(`p:${position}`, 'utf8').toString('base64url');
}

export function decodeContinuationToken(token: string): string {
  const text = Buffer.from(token, 'base64url').toString('utf8');
  if (!text.startsWith('p:') || Buffer.from(text, 'utf8').toString('base64url') !== token) {
    throw new ObjectError('InvalidArgument', 'the continuation token is not one this store gave out');
  }
  return text.slice(2);
}

/** The position just behind key `key` (and every version or upload of it). */
function positionAfterKey(key: string): string {
  return afterEveryStartingWith(`${key}${KEY_END}`)!;
}

export async function listObjectsV2(
  context: ObjectContext,
  request: ListObjectsRequest & { continuationToken?: string; startAfter?: string },
): Promise<ListObjectsPage & { nextContinuationToken?: string; keyCount: number }> {
  const bucket = (await context.bucket(request.bucket)).record;
  const prefix = request.prefix ?? '';
  const after = request.continuationToken !== undefined ? decodeContinuationToken(request.continuationToken) : request.startAfter !== undefined ? positionAfterKey(request.startAfter) : undefined;
  const result = await rollup(keyedSource(context.tables.current, bucket.id, prefix), {
    prefix,
    maxKeys: checkMaxKeys(request.maxKeys),
    ...(request.delimiter === undefined ? {} : { delimiter: request.delimiter }),
    ...(after === undefined ? {} : { after }),
    ...(request.continuationToken === undefined && request.startAfter !== undefined ? { skipPrefixesUpTo: request.startAfter } : {}),
  });
  const { records, commonPrefixes } = split(result.items);
  return {
    objects: records,
    commonPrefixes,
    keyCount: result.items.length,
    isTruncated: result.isTruncated,
    ...(result.isTruncated && result.nextPosition !== undefined ? { nextContinuationToken: encodeContinuationToken(result.nextPosition) } : {}),
  };
}

/** ListObjects (V1): NextMarker only when a delimiter was given (without one, clients use the last key). */
export async function listObjectsV1(context: ObjectContext, request: ListObjectsRequest & { marker?: string }): Promise<ListObjectsPage & { nextMarker?: string }> {
  const bucket = (await context.bucket(request.bucket)).record;
  const prefix = request.prefix ?? '';
  const result = await rollup(keyedSource(context.tables.current, bucket.id, prefix), {
    prefix,
    maxKeys: checkMaxKeys(request.maxKeys),
    ...(request.delimiter === undefined ? {} : { delimiter: request.delimiter }),
    ...(request.marker === undefined ? {} : { after: positionAfterKey(request.marker), skipPrefixesUpTo: request.marker }),
  });
  const { records, commonPrefixes } = split(result.items);
  const nextMarker = result.isTruncated && request.delimiter !== undefined && request.delimiter !== '' ? lastName(result.items) : undefined;
  return { objects: records, commonPrefixes, isTruncated: result.isTruncated, ...(nextMarker === undefined ? {} : { nextMarker }) };
}

export interface VersionListing {
  readonly version: ObjectVersionRecord;
  readonly isLatest: boolean;
}

export async function listObjectVersions(
  context: ObjectContext,
  request: ListObjectsRequest & { keyMarker?: string; versionIdMarker?: string },
): Promise<{ versions: VersionListing[]; commonPrefixes: string[]; isTruncated: boolean; nextKeyMarker?: string; nextVersionIdMarker?: string }> {
  const bucket = (await context.bucket(request.bucket)).record;
  const prefix = request.prefix ?? '';
  let after: string | undefined;
  let resumedInside: string | undefined;
  if (request.keyMarker !== undefined) {
    after = positionAfterKey(request.keyMarker);
    if (request.versionIdMarker !== undefined && request.versionIdMarker !== '') {
      const marker = await findVersion(context, bucket.id, request.keyMarker, request.versionIdMarker);
      if (marker !== undefined) {
        after = `${request.keyMarker}${KEY_END}${marker.record.slot}`;
        resumedInside = request.keyMarker;
      }
    }
  } else if (request.versionIdMarker !== undefined) {
    throw new ObjectError('InvalidArgument', 'a version-id-marker needs a key-marker');
  }
  const result = await rollup(keyedSource(context.tables.versions, bucket.id, prefix), {
    prefix,
    maxKeys: checkMaxKeys(request.maxKeys),
    ...(request.delimiter === undefined ? {} : { delimiter: request.delimiter }),
    ...(after === undefined ? {} : { after }),
    ...(request.keyMarker === undefined ? {} : { skipPrefixesUpTo: request.keyMarker }),
  });
  const versions: VersionListing[] = [];
  const commonPrefixes: string[] = [];
  let previousKey = resumedInside;
  for (const item of result.items) {
    if (item.kind === 'prefix') {
      commonPrefixes.push(item.prefix);
      previousKey = undefined;
      continue;
    }
    const version = item.entry.record;
    versions.push({ version, isLatest: version.key !== previousKey });
    previousKey = version.key;
  }
  if (!result.isTruncated) return { versions, commonPrefixes, isTruncated: false };
  const last = result.items.at(-1);
  const nextKeyMarker = lastName(result.items);
  return {
    versions,
    commonPrefixes,
    isTruncated: true,
    ...(nextKeyMarker === undefined ? {} : { nextKeyMarker }),
    ...(last?.kind === 'entry' ? { nextVersionIdMarker: last.entry.record.versionId } : {}),
  };
}

export async function listMultipartUploads(
  context: ObjectContext,
  request: ListObjectsRequest & { keyMarker?: string; uploadIdMarker?: string },
): Promise<{ uploads: UploadRecord[]; commonPrefixes: string[]; isTruncated: boolean; nextKeyMarker?: string; nextUploadIdMarker?: string }> {
  const bucket = (await context.bucket(request.bucket)).record;
  const prefix = request.prefix ?? '';
  const base = `${bucket.id}/`;
  const table = context.tables.uploads;
  const source: RollupSource<UploadRecord> = {
    async page(after, limit) {
      const page = await table.indexPage('key', `${base}${prefix}`, { limit, ...(after === undefined ? {} : { after: `${base}${after}` }) });
      const entries = page.records.map(({ record }) => ({ key: record.key, position: `${record.key}${KEY_END}${record.uploadId}`, record }));
      return { entries, more: page.nextAfter !== undefined };
    },
    positionAfterPrefix: (keyPrefix) => afterEveryStartingWith(keyPrefix),
  };
  let after: string | undefined;
  if (request.keyMarker !== undefined) {
    after = request.uploadIdMarker ? `${request.keyMarker}${KEY_END}${request.uploadIdMarker}` : positionAfterKey(request.keyMarker);
  }
  const result = await rollup(source, {
    prefix,
    maxKeys: checkMaxKeys(request.maxKeys),
    ...(request.delimiter === undefined ? {} : { delimiter: request.delimiter }),
    ...(after === undefined ? {} : { after }),
    ...(request.keyMarker === undefined ? {} : { skipPrefixesUpTo: request.keyMarker }),
  });
  const { records, commonPrefixes } = split(result.items);
  if (!result.isTruncated) return { uploads: records, commonPrefixes, isTruncated: false };
  const last = result.items.at(-1);
  const nextKeyMarker = lastName(result.items);
  return {
    uploads: records,
    commonPrefixes,
    isTruncated: true,
    ...(nextKeyMarker === undefined ? {} : { nextKeyMarker }),
    ...(last?.kind === 'entry' ? { nextUploadIdMarker: last.entry.record.uploadId } : {}),
  };
}

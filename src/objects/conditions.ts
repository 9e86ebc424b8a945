/**
 * Conditional requests (RFC 9110 section 13.2.2, which S3 follows): evaluated in this order, each
 * step only when the one before did not apply:
 *   1. If-Match false -> 412;  2. (no If-Match) If-Unmodified-Since false -> 412;
 *   3. If-None-Match false -> 304 for GET/HEAD, 412 otherwise;
 *   4. (no If-None-Match, GET/HEAD) If-Modified-Since false -> 304.
 * Dates compare at one-second resolution (HTTP dates have no more); an unparsable date is ignored.
 */
import { ObjectError } from './errors.js';

export interface ConditionHeaders {
  readonly ifMatch?: string;
  readonly ifNoneMatch?: string;
  readonly ifModifiedSince?: string;
  readonly ifUnmodifiedSince?: string;
}

export type ConditionOutcome = 'proceed' | 'not-modified' | 'precondition-failed';

/** What a condition is evaluated against: the current representation, or none. */
export interface ConditionTarget {
  readonly etag: string;
  readonly lastModifiedMs: number;
}

/** The entity tags of an If-Match / If-None-Match value ("*" stands for any). */
export function parseEtagList(value: string): string[] {
  return value
    .split(',')
    .map((tag) => tag.trim())
    .filter((tag) => tag.length > 0)
    .map((tag) => (tag.startsWith('W/') ? tag.slice(2) : tag))
    .map((tag) => (tag.length >= 2 && tag.startsWith('"') && tag.endsWith('"') ? tag.slice(1, -1) : tag));
}

function etagMatches(list: string, etag: string | undefined): boolean {
  if (etag === undefined) return false;
  return parseEtagList(list).some((tag) => tag === '*' || tag === etag);
}

function seconds(ms: number): number {
  return Math.floor(ms / 1000);
}

function dateMs(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const ms = Date.parse(text);
  return Number.isNaN(ms) ? undefined : ms;
}

/** Evaluates the conditions of a GET or HEAD (`safe`) or of a write against `target` (undefined: no object). */
export function evaluateConditions(headers: ConditionHeaders, target: ConditionTarget | undefined, safe: boolean): ConditionOutcome {
  if (headers.ifMatch !== undefined) {
    if (target === undefined || !etagMatches(headers.ifMatch, target.etag)) return 'precondition-failed';
  } else {
    const since = dateMs(headers.ifUnmodifiedSince);
    if (since !== undefined && target !== undefined && seconds(target.lastModifiedMs) > seconds(since)) return 'precondition-failed';
  }
  if (headers.ifNoneMatch !== undefined) {
    const anyMatches = parseEtagList(headers.ifNoneMatch).includes('*') ? target !== undefined : etagMatches(headers.ifNoneMatch, target?.etag);
    if (anyMatches) return safe ? 'not-modified' : 'precondition-failed';
  } else if (safe) {
    const since = dateMs(headers.ifModifiedSince);
    if (since !== undefined && target !== undefined && seconds(target.lastModifiedMs) <= seconds(since)) return 'not-modified';
  }
  return 'proceed';
}

/** The conditions of a write (PUT, CompleteMultipartUpload, CopyObject's destination): throws PreconditionFailed. */
export function checkWriteConditions(headers: ConditionHeaders, target: ConditionTarget | undefined, key: string): void {
  if (headers.ifMatch !== undefined && target === undefined) {
    // S3 answers If-Match on a missing key with 404 NoSuchKey, not 412.
    throw new ObjectError('NoSuchKey', `${key} does not exist, so If-Match cannot hold`);
  }
  if (evaluateConditions(headers, target, false) !== 'proceed') {
    throw new ObjectError('PreconditionFailed', `at least one of the preconditions given for ${key} did not hold`);
  }
}

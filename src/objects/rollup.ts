/**
 * The listing walk every S3 list shares: entries in key order, read a bounded catalog page at a
 * time, keys under `prefix` that hold `delimiter` after it rolled up into one common prefix each,
 * the walk jumping past a common prefix's keys with one new page read instead of reading them.
 * Each page reads at most maxKeys + 1 entries; a walk makes at most one read per item it returns
 * plus one per page that grew (pages grow 4x from 16 while no common prefix is jumped).
 */
import { CATALOG_PAGE_MAX } from '../core/catalog-store.js';
import { ObjectError } from './errors.js';

/** Entries of the first page read when a delimiter is given (then 4x per page with nothing rolled up). */
const ROLLUP_PAGE_FIRST = 16;

/** S3's most keys a list returns (and the default). */
export const LIST_KEYS_MAX = 1000;

export interface RollupEntry<R> {
  /** The object key the entry belongs to (what prefix and delimiter apply to). */
  readonly key: string;
  /** The catalog position of the entry: pass as `after` to continue behind it. */
  readonly position: string;
  readonly record: R;
}

export interface RollupSource<R> {
  /** Entries after `after` (a position, or undefined: from the start of `prefix`), in order. */
  page(after: string | undefined, limit: number): Promise<{ entries: RollupEntry<R>[]; more: boolean }>;
  /** The position behind every entry whose key starts with `keyPrefix` (undefined: nothing is behind them). */
  positionAfterPrefix(keyPrefix: string): string | undefined;
}

export type RollupItem<R> = { readonly kind: 'entry'; readonly entry: RollupEntry<R> } | { readonly kind: 'prefix'; readonly prefix: string };

export interface RollupResult<R> {
  readonly items: RollupItem<R>[];
  readonly isTruncated: boolean;
  /** Where the next page starts (a position), when truncated. */
  readonly nextPosition?: string;
}

export function checkMaxKeys(maxKeys: number | undefined): number {
  const value = maxKeys ?? LIST_KEYS_MAX;
  if (!Number.isSafeInteger(value) || value < 0) throw new ObjectError('InvalidArgument', `max-keys ${value} is not a whole number of 0 or more`);
  return Math.min(value, LIST_KEYS_MAX);
}

/** The smallest string greater than every string that starts with `prefix` (undefined when none is). */
export function afterEveryStartingWith(prefix: string): string | undefined {
  let end = prefix.length;
  while (end > 0 && prefix.charCodeAt(end - 1) === 0xffff) end--;
  if (end === 0) return undefined;
  return prefix.slice(0, end - 1) + String.fromCharCode(prefix.charCodeAt(end - 1) + 1);
}

export async function rollup<R>(
  source: RollupSource<R>,
  options: { prefix: string; delimiter?: string; maxKeys: number; after?: string; skipPrefixesUpTo?: string },
): Promise<RollupResult<R>> {
  const { prefix, maxKeys } = options;
  const delimiter = options.delimiter === '' ? undefined : options.delimiter;
  const items: RollupItem<R>[] = [];
  let after = options.after;
  // With a delimiter, most of a page may roll up into one common prefix and be jumped over: pages
  // start small and grow while nothing is jumped, so a listing reads about what it returns.
  let pageEntries = delimiter === undefined ? CATALOG_PAGE_MAX : ROLLUP_PAGE_FIRST;
  for (;;) {
    const page = await source.page(after, Math.min(pageEntries, CATALOG_PAGE_MAX, maxKeys - items.length + 1));
    let jumped = false;
    for (const entry of page.entries) {
      if (!entry.key.startsWith(prefix)) continue;
      const at = delimiter === undefined ? -1 : entry.key.indexOf(delimiter, prefix.length);
      const commonPrefix = at < 0 ? undefined : entry.key.slice(0, at + delimiter!.length);
      const skip = commonPrefix !== undefined && options.skipPrefixesUpTo !== undefined && commonPrefix <= options.skipPrefixesUpTo;
      if (!skip && items.length === maxKeys) return { items, isTruncated: true, ...(after === undefined ? {} : { nextPosition: after }) };
      if (commonPrefix === undefined) {
        items.push({ kind: 'entry', entry });
        after = entry.position;
        continue;
      }
      if (!skip) items.push({ kind: 'prefix', prefix: commonPrefix });
      const behind = source.positionAfterPrefix(commonPrefix);
      if (behind === undefined) return { items, isTruncated: false };
      after = behind;
      jumped = true;
      break;
    }
    if (!jumped && !page.more) return { items, isTruncated: false };
    pageEntries = jumped ? ROLLUP_PAGE_FIRST : pageEntries * 4;
  }
}

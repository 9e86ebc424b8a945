/**
 * Byte ranges of GET and UploadPartCopy (RFC 9110 section 14.1.2, one range): "bytes=first-last",
 * "bytes=first-" and "bytes=-suffixLength", resolved against the object's size.
 */
import { ObjectError } from './errors.js';

export type ByteRangeRequest =
  | { readonly first: number; readonly last?: number }
  | { readonly suffixLengthBytes: number };

/** The range of a Range header; undefined for a header this reads as absent (RFC: ignore what is not a single bytes range). */
export function parseRangeHeader(value: string): ByteRangeRequest | undefined {
  const match = /^bytes=(\d*)-(\d*)$/.exec(value.trim());
  if (match === null) return undefined;
  const [, first, last] = match;
  if (first === '' && last === '') return undefined;
  if (first === '') return { suffixLengthBytes: Number(last) };
  const firstBytes = Number(first);
  if (last === '') return { first: firstBytes };
  const lastBytes = Number(last);
  return lastBytes < firstBytes ? undefined : { first: firstBytes, last: lastBytes };
}

/** The bytes [start, end) a range names in an object of `sizeBytes`; InvalidRange when it names none. */
export function resolveRange(range: ByteRangeRequest, sizeBytes: number): { startBytes: number; endBytes: number } {
  if ('suffixLengthBytes' in range) {
    if (range.suffixLengthBytes === 0 || sizeBytes === 0) throw invalidRange(sizeBytes);
    return { startBytes: Math.max(0, sizeBytes - range.suffixLengthBytes), endBytes: sizeBytes };
  }
  if (range.first >= sizeBytes) throw invalidRange(sizeBytes);
  return { startBytes: range.first, endBytes: Math.min(sizeBytes, (range.last ?? sizeBytes - 1) + 1) };
}

function invalidRange(sizeBytes: number): ObjectError {
  return new ObjectError('InvalidRange', `the requested range is not satisfiable: the object has ${sizeBytes} bytes`);
}

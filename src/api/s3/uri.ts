/**
 * S3's URI encoding (SigV4 "UriEncode"): every byte but the unreserved ones (A-Z a-z 0-9 - _ . ~)
 * as %XX in upper case, '/' kept in paths. Decoding works on bytes, so a key that is not valid
 * UTF-8 still round-trips, and a request's path is encoded once (never double-encoded): its
 * segments are decoded, then encoded again, so "a%20b" and "a b"-as-sent canonicalize alike
 * while an encoded slash (%2F) stays inside its segment.
 */
import { S3Error } from './errors.js';

const HEX = '0123456789ABCDEF';

function isUnreserved(byte: number): boolean {
  return (
    (byte >= 0x41 && byte <= 0x5a) || // A-Z
    (byte >= 0x61 && byte <= 0x7a) || // a-z
    (byte >= 0x30 && byte <= 0x39) || // 0-9
    byte === 0x2d || byte === 0x2e || byte === 0x5f || byte === 0x7e // - . _ ~
  );
}

/** UriEncode of bytes (or a string's UTF-8); `keepSlash` leaves '/' as it is (object key paths). */
export function s3UriEncode(input: string | Uint8Array, keepSlash = false): string {
  const bytes = typeof input === 'string' ? Buffer.from(input, 'utf8') : input;
  let out = '';
  for (const byte of bytes) {
    if (isUnreserved(byte) || (keepSlash && byte === 0x2f)) out += String.fromCharCode(byte);
    else out += `%${HEX[byte >> 4]}${HEX[byte & 15]}`;
  }
  return out;
}

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x41 && code <= 0x46) return code - 0x37;
  if (code >= 0x61 && code <= 0x66) return code - 0x57;
  return -1;
}

/**
 * Percent-decodes to bytes. `plusIsSpace` for form-style query values (S3 treats '+' in a query
 * as a space when it decodes one, but SigV4 canonicalization does not: callers choose).
 */
export function percentDecodeBytes(text: string, plusIsSpace = false): Buffer {
  const raw = Buffer.from(text, 'utf8');
  const out = Buffer.allocUnsafe(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; i++) {
    const byte = raw[i]!;
    if (byte === 0x25) {
      const hi = i + 2 < raw.length ? hexValue(raw[i + 1]!) : -1;
      const lo = hi >= 0 ? hexValue(raw[i + 2]!) : -1;
      if (lo < 0) throw new S3Error('InvalidArgument', `the request URI has a '%' not followed by two hex digits (${JSON.stringify(text.slice(0, 200))}); encode '%' as %25`);
      out[n++] = hi * 16 + lo;
      i += 2;
    } else if (plusIsSpace && byte === 0x2b) {
      out[n++] = 0x20;
    } else {
      out[n++] = byte;
    }
  }
  return out.subarray(0, n);
}

/** Percent-decodes to a string (S3 names are UTF-8; an invalid sequence is refused). */
export function percentDecode(text: string, plusIsSpace = false): string {
  const bytes = percentDecodeBytes(text, plusIsSpace);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new S3Error('InvalidArgument', `the request URI decodes to bytes that are not UTF-8 (${JSON.stringify(text.slice(0, 200))})`);
  }
}

/** The canonical URI of a raw request path: each '/'-separated segment decoded and encoded once. */
export function canonicalPath(rawPath: string): string {
  if (rawPath === '' || rawPath === '/') return '/';
  return rawPath
    .split('/')
    .map((segment) => s3UriEncode(percentDecodeBytes(segment)))
    .join('/');
}

/** A raw query string as (decoded name, decoded value) pairs in order; '+' stays '+'. */
export function parseQuery(rawQuery: string): [string, string][] {
  if (rawQuery === '') return [];
  return rawQuery
    .split('&')
    .filter((part) => part !== '')
    .map((part) => {
      const eq = part.indexOf('=');
      return eq < 0 ? [percentDecode(part), ''] : [percentDecode(part.slice(0, eq)), percentDecode(part.slice(eq + 1))];
    });
}

/** SigV4's canonical query string: names and values encoded, sorted by name then value. */
export function canonicalQuery(pairs: readonly (readonly [string, string])[]): string {
  const encoded = pairs.map(([name, value]) => [s3UriEncode(name), s3UriEncode(value)] as const);
  encoded.sort(([an, av], [bn, bv]) => (an < bn ? -1 : an > bn ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  return encoded.map(([name, value]) => `${name}=${value}`).join('&');
}

/** Splits a request target into its raw path and raw query. */
export function splitTarget(url: string): { rawPath: string; rawQuery: string } {
  const q = url.indexOf('?');
  return q < 0 ? { rawPath: url, rawQuery: '' } : { rawPath: url.slice(0, q), rawQuery: url.slice(q + 1) };
}

/**
 * AWS Signature Version 4 as S3 uses it, checked against what the request carried: the
 * Authorization header or a presigned query (X-Amz-Algorithm, -Credential, -Date, -Expires,
 * -SignedHeaders, -Signature). The canonical request is rebuilt from the request as received:
 * the signed headers in SignedHeaders' order with their values as sent (trimmed, inner runs of
 * spaces made one, repeated headers joined with ','), the path encoded once by S3's rules, the
 * query sorted. The payload mode (x-amz-content-sha256) is returned for the body to be checked
 * as it streams (payload.ts, aws-chunked.ts).
 */
import { createHash, createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';
import { S3Error } from './errors.js';
import { canonicalPath, canonicalQuery, parseQuery, splitTarget } from './uri.js';

export const SIGV4_ALGORITHM = 'AWS4-HMAC-SHA256';
/** The scope's last part. */
const SCOPE_TERMINATOR = 'aws4_request';
const SERVICE = 's3';
/** S3 refuses a request whose time is further than this from its own clock. */
export const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000;
/** A presigned URL lives at most seven days. */
export const MAX_PRESIGN_EXPIRES_SECONDS = 7 * 24 * 3600;

export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
export const STREAMING_SIGNED = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD';
export const STREAMING_SIGNED_TRAILER = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER';
export const STREAMING_UNSIGNED_TRAILER = 'STREAMING-UNSIGNED-PAYLOAD-TRAILER';
/** The hex SHA-256 of nothing (a chunk signature's "previous payload" part). */
export const EMPTY_SHA256_HEX = createHash('sha256').digest('hex');

/** How the body is protected, from x-amz-content-sha256. */
export type PayloadMode =
  | { readonly kind: 'sha256'; readonly sha256Hex: string }
  | { readonly kind: 'unsigned' }
  | { readonly kind: 'streaming-signed'; readonly trailer: boolean }
  | { readonly kind: 'streaming-unsigned-trailer' };

/** What chunk and trailer signatures of a streaming-signed body chain from. */
export interface ChunkSigningContext {
  readonly signingKey: KeyObject;
  /** X-Amz-Date of the request (ISO 8601 basic). */
  readonly amzDate: string;
  /** date/region/s3/aws4_request */
  readonly scope: string;
  /** The request's own signature: the first chunk's "previous signature". */
  readonly seedSignature: string;
}

/** The secret of an access key and whose it is; undefined: no such (active) key. */
export type SecretLookup = (accessKeyId: string) => Promise<{ secret: string; owner: string } | undefined>;

/** The parts of a request the signature covers, as received. */
export interface SignedRequestView {
  readonly method: string;
  /** The request target as received: raw path and raw query. */
  readonly url: string;
  /** node's rawHeaders: name, value, name, value ... in the order received. */
  readonly rawHeaders: readonly string[];
}

export interface VerifiedRequest {
  readonly accessKeyId: string;
  readonly owner: string;
  readonly presigned: boolean;
  readonly payload: PayloadMode;
  /** Set for streaming-signed payloads. */
  readonly chunkSigning: ChunkSigningContext | undefined;
}

interface Credential {
  accessKeyId: string;
  date: string;
  region: string;
  scope: string;
}

interface SignatureParts {
  credential: Credential;
  signedHeaders: string;
  signature: string;
  amzDate: string;
  presigned: boolean;
  expiresSeconds: number | undefined;
}

const AMZ_DATE = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/;
const HEX_SIGNATURE = /^[0-9a-f]{64}$/;

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key: Buffer | string, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

/**
 * The signing key of a secret for one day, region and service, as a KeyObject: node's createHmac
 * with a Buffer key first asks whether it is a KeyObject by a check that throws and catches inside
 * node, ~0.3 ms per call in the daemon (a 1 MiB PUT's profile: 6% of the event loop's CPU), where
 * a KeyObject key costs ~2 us.
 */
export function signingKey(secret: string, date: string, region: string, service = SERVICE): KeyObject {
  return createSecretKey(hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), service), SCOPE_TERMINATOR));
}

/** Signing keys derived lately (a client signs with one key per day and region). */
const SIGNING_KEY_CACHE_ENTRIES_MAX = 256;
const signingKeys = new Map<string, KeyObject>();

/**
 * signingKey, remembered: deriving it is four HMACs per request, and the same key serves every
 * request of a day. The entry is named by the secret itself, so a deleted or replaced key's
 * secret simply stops being asked for.
 */
function cachedSigningKey(secret: string, date: string, region: string): KeyObject {
  const name = `${date}/${region}/${secret}`;
  let key = signingKeys.get(name);
  if (key === undefined) {
    key = signingKey(secret, date, region);
    if (signingKeys.size >= SIGNING_KEY_CACHE_ENTRIES_MAX) signingKeys.clear();
    signingKeys.set(name, key);
  }
  return key;
}

export function hmacHex(key: KeyObject, data: string): string {
  return createHmac('sha256', key).update(data, 'utf8').digest('hex');
}

/** Milliseconds since the epoch of an X-Amz-Date (YYYYMMDD'T'HHMMSS'Z'), NaN if malformed. */
export function parseAmzDate(text: string): number {
  const m = AMZ_DATE.exec(text);
  if (!m) return NaN;
  const [, y, mo, d, h, mi, s] = m.map(Number) as [number, number, number, number, number, number, number];
  const ms = Date.UTC(y, mo - 1, d, h, mi, s);
  const back = new Date(ms);
  return back.getUTCDate() === d && back.getUTCMonth() === mo - 1 ? ms : NaN;
}

export function formatAmzDate(ms: number): string {
  return new Date(ms).toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

function parseCredential(text: string, malformed: (why: string) => S3Error): Credential {
  const parts = text.split('/');
  if (parts.length !== 5) throw malformed(`the Credential '${text}' is not ACCESS_KEY/YYYYMMDD/REGION/s3/aws4_request`);
  const [accessKeyId, date, region, service, terminator] = parts as [string, string, string, string, string];
  if (accessKeyId === '' || !/^\d{8}$/.test(date) || region === '') throw malformed(`the Credential '${text}' is not ACCESS_KEY/YYYYMMDD/REGION/s3/aws4_request`);
  if (service !== SERVICE) throw malformed(`the Credential names the service '${service}'; this endpoint is 's3'`);
  if (terminator !== SCOPE_TERMINATOR) throw malformed(`the Credential must end with '/${SCOPE_TERMINATOR}', not '/${terminator}'`);
  return { accessKeyId, date, region, scope: `${date}/${region}/${service}/${terminator}` };
}

/** The values of each header by lower-case name, in the order received. */
export function headerValues(rawHeaders: readonly string[]): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = (rawHeaders[i] as string).toLowerCase();
    const list = map.get(name);
    if (list === undefined) map.set(name, [rawHeaders[i + 1] as string]);
    else list.push(rawHeaders[i + 1] as string);
  }
  return map;
}

function canonicalHeaderValue(values: readonly string[]): string {
  return values.map((v) => v.trim().replace(/ {2,}/g, ' ')).join(',');
}

/** The SigV4 canonical request of what was received. */
export function canonicalRequest(view: SignedRequestView, signedHeaders: string, payloadHash: string, dropQuery?: string): string {
  const { rawPath, rawQuery } = splitTarget(view.url);
  const headers = headerValues(view.rawHeaders);
  const names = signedHeaders.split(';');
  const pairs = parseQuery(rawQuery).filter(([name]) => name !== dropQuery);
  return [
    view.method,
    canonicalPath(rawPath),
    canonicalQuery(pairs),
    names.map((name) => `${name}:${canonicalHeaderValue(headers.get(name) ?? [])}\n`).join(''),
    signedHeaders,
    payloadHash,
  ].join('\n');
}

export function stringToSign(amzDate: string, scope: string, canonical: string): string {
  return `${SIGV4_ALGORITHM}\n${amzDate}\n${scope}\n${sha256Hex(canonical)}`;
}

function parseAuthorizationHeader(header: string, view: SignedRequestView, headers: Map<string, string[]>): SignatureParts {
  const malformed = (why: string) => new S3Error('AuthorizationHeaderMalformed', `the Authorization header is malformed: ${why}`);
  const space = header.indexOf(' ');
  const algorithm = space < 0 ? header : header.slice(0, space);
  if (algorithm !== SIGV4_ALGORITHM) {
    throw new S3Error('InvalidRequest', `the authorization mechanism '${algorithm}' is not supported; sign requests with ${SIGV4_ALGORITHM} (Signature Version 4)`);
  }
  const fields = new Map<string, string>();
  for (const part of header.slice(space + 1).split(',')) {
    const eq = part.indexOf('=');
    if (eq < 0) throw malformed(`'${part.trim()}' is not NAME=VALUE`);
    fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (credential === undefined || signedHeaders === undefined || signature === undefined) {
    throw malformed('it needs Credential=..., SignedHeaders=... and Signature=...');
  }
  const amzDate = headers.get('x-amz-date')?.[0] ?? dateHeaderAsAmz(headers.get('date')?.[0]);
  if (amzDate === undefined) throw new S3Error('AccessDenied', 'the request has no X-Amz-Date (or Date) header; SigV4 requests must carry their time');
  if (!headers.has('x-amz-content-sha256')) {
    throw new S3Error('InvalidRequest', `missing required header for this request: x-amz-content-sha256 (${view.method} ${splitTarget(view.url).rawPath})`);
  }
  return { credential: parseCredential(credential, malformed), signedHeaders, signature, amzDate, presigned: false, expiresSeconds: undefined };
}

function dateHeaderAsAmz(date: string | undefined): string | undefined {
  if (date === undefined) return undefined;
  const ms = Date.parse(date);
  return Number.isNaN(ms) ? undefined : formatAmzDate(ms);
}

function parsePresignedQuery(query: Map<string, string>): SignatureParts {
  const malformed = (why: string) => new S3Error('AuthorizationQueryParametersError', `the presigned URL is malformed: ${why}`);
  const algorithm = query.get('X-Amz-Algorithm');
  if (algorithm !== SIGV4_ALGORITHM) throw malformed(`X-Amz-Algorithm must be ${SIGV4_ALGORITHM}, not '${algorithm ?? ''}'`);
  const need = (name: string): string => {
    const value = query.get(name);
    if (value === undefined || value === '') throw malformed(`it has no ${name}`);
    return value;
  };
  const expiresText = need('X-Amz-Expires');
  const expiresSeconds = /^\d{1,7}$/.test(expiresText) ? Number(expiresText) : NaN;
  if (!(expiresSeconds >= 1 && expiresSeconds <= MAX_PRESIGN_EXPIRES_SECONDS)) {
    throw malformed(`X-Amz-Expires must be 1..${MAX_PRESIGN_EXPIRES_SECONDS} seconds, not '${expiresText}'`);
  }
  return {
    credential: parseCredential(need('X-Amz-Credential'), malformed),
    signedHeaders: need('X-Amz-SignedHeaders'),
    signature: need('X-Amz-Signature'),
    amzDate: need('X-Amz-Date'),
    presigned: true,
    expiresSeconds,
  };
}

function payloadMode(value: string | undefined): PayloadMode {
  if (value === undefined || value === UNSIGNED_PAYLOAD) return { kind: 'unsigned' };
  if (/^[0-9a-f]{64}$/.test(value)) return { kind: 'sha256', sha256Hex: value };
  if (value === STREAMING_SIGNED) return { kind: 'streaming-signed', trailer: false };
  if (value === STREAMING_SIGNED_TRAILER) return { kind: 'streaming-signed', trailer: true };
  if (value === STREAMING_UNSIGNED_TRAILER) return { kind: 'streaming-unsigned-trailer' };
  throw new S3Error(
    'InvalidArgument',
    `x-amz-content-sha256 must be the payload's lower-case hex SHA-256, ${UNSIGNED_PAYLOAD}, ${STREAMING_SIGNED}, ${STREAMING_SIGNED_TRAILER} or ${STREAMING_UNSIGNED_TRAILER}, not '${value.slice(0, 80)}'`,
  );
}

export interface VerifyOptions {
  /** The clock (ms since the epoch); Date.now by default. */
  readonly now?: () => number;
  /** Only this region is accepted (undefined: any region the client signed for). */
  readonly region?: string;
}

/**
 * Checks the request's signature. Resolves to undefined for an anonymous request (neither an
 * Authorization header nor a presigned query); throws an S3Error for every refusal.
 */
export async function verifySigV4(view: SignedRequestView, lookup: SecretLookup, options: VerifyOptions = {}): Promise<VerifiedRequest | undefined> {
  const headers = headerValues(view.rawHeaders);
  const authorization = headers.get('authorization');
  const query = new Map(parseQuery(splitTarget(view.url).rawQuery));
  if (authorization !== undefined && query.has('X-Amz-Algorithm')) {
    throw new S3Error('InvalidArgument', 'a request is signed either in its Authorization header or in its query (presigned), not both');
  }
  if (authorization !== undefined && authorization.length > 1) throw new S3Error('InvalidArgument', 'the request has more than one Authorization header');
  let parts: SignatureParts;
  if (authorization !== undefined) parts = parseAuthorizationHeader(authorization[0] as string, view, headers);
  else if (query.has('X-Amz-Algorithm')) parts = parsePresignedQuery(query);
  else if (query.has('AWSAccessKeyId') && query.has('Signature')) {
    // What botocore presigns by default for an endpoint URL: not anonymous, and not served.
    throw new S3Error('InvalidRequest', `Signature Version 2 presigned URLs are not supported; presign with ${SIGV4_ALGORITHM} (boto3: Config(signature_version='s3v4'))`);
  } else return undefined;

  const { credential, signedHeaders } = parts;
  const signedNames = signedHeaders.split(';');
  if (!signedNames.includes('host')) throw new S3Error('AccessDenied', "the 'host' header must be signed (SignedHeaders)");
  if (signedNames.some((n) => n === '' || n !== n.toLowerCase())) throw new S3Error('AuthorizationHeaderMalformed', `SignedHeaders '${signedHeaders}' must list lower-case header names separated by ';'`);
  if (!parts.presigned) {
    const unsigned = [...headers.keys()].filter((name) => name.startsWith('x-amz-') && !signedNames.includes(name));
    if (unsigned.length > 0) throw new S3Error('AccessDenied', `there were headers present in the request which were not signed: ${unsigned.join(', ')}`);
  }
  if (!HEX_SIGNATURE.test(parts.signature)) throw new S3Error('SignatureDoesNotMatch', 'the signature must be 64 lower-case hex digits');
  const requestMs = parseAmzDate(parts.amzDate);
  if (Number.isNaN(requestMs)) throw new S3Error('AccessDenied', `X-Amz-Date '${parts.amzDate}' is not a valid ISO 8601 basic time (YYYYMMDDTHHMMSSZ)`);
  if (parts.amzDate.slice(0, 8) !== credential.date) {
    throw new S3Error('SignatureDoesNotMatch', `the Credential's date ${credential.date} is not the day of X-Amz-Date ${parts.amzDate}`);
  }
  if (options.region !== undefined && credential.region !== options.region) {
    throw new S3Error('AuthorizationHeaderMalformed', `the region '${credential.region}' is wrong; expecting '${options.region}'`, { Region: options.region });
  }
  const nowMs = (options.now ?? Date.now)();
  if (parts.presigned) {
    if (requestMs - nowMs > MAX_CLOCK_SKEW_MS) throw new S3Error('AccessDenied', `the presigned URL is not valid yet (X-Amz-Date ${parts.amzDate} is in the future)`);
    if (nowMs > requestMs + (parts.expiresSeconds as number) * 1000) {
      throw new S3Error('AccessDenied', 'request has expired (the presigned URL is past X-Amz-Date + X-Amz-Expires); presign a new one', {
        Expires: new Date(requestMs + (parts.expiresSeconds as number) * 1000).toISOString(),
        ServerTime: new Date(nowMs).toISOString(),
      });
    }
  } else if (Math.abs(nowMs - requestMs) > MAX_CLOCK_SKEW_MS) {
    throw new S3Error('RequestTimeTooSkewed', "the difference between the request time and the server's time is too large (more than 15 minutes); fix the client's clock", {
      RequestTime: parts.amzDate,
      ServerTime: new Date(nowMs).toISOString(),
      MaxAllowedSkewMilliseconds: String(MAX_CLOCK_SKEW_MS),
    });
  }

  const contentSha = headers.get('x-amz-content-sha256')?.[0];
  const payload = payloadMode(contentSha);
  const payloadHash = parts.presigned ? (contentSha ?? UNSIGNED_PAYLOAD) : (contentSha as string);

  const found = await lookup(credential.accessKeyId);
  if (found === undefined) throw new S3Error('InvalidAccessKeyId', `the access key id '${credential.accessKeyId}' does not exist in our records (see 'strata user key list')`);
  const key = cachedSigningKey(found.secret, credential.date, credential.region);
  const canonical = canonicalRequest(view, signedHeaders, payloadHash, parts.presigned ? 'X-Amz-Signature' : undefined);
  const toSign = stringToSign(parts.amzDate, credential.scope, canonical);
  const expected = Buffer.from(hmacHex(key, toSign), 'ascii');
  if (!timingSafeEqual(expected, Buffer.from(parts.signature, 'ascii'))) {
    throw new S3Error('SignatureDoesNotMatch', 'the request signature we calculated does not match the signature you provided; check your key and signing method', {
      AWSAccessKeyId: credential.accessKeyId,
      StringToSign: toSign,
      CanonicalRequest: canonical,
    });
  }
  const chunkSigning = payload.kind === 'streaming-signed' ? { signingKey: key, amzDate: parts.amzDate, scope: credential.scope, seedSignature: parts.signature } : undefined;
  return { accessKeyId: credential.accessKeyId, owner: found.owner, presigned: parts.presigned, payload, chunkSigning };
}

/** The signature of one aws-chunked chunk, chained from the previous one. */
export function chunkSignature(ctx: ChunkSigningContext, previousSignature: string, chunkSha256Hex: string): string {
  return hmacHex(ctx.signingKey, `AWS4-HMAC-SHA256-PAYLOAD\n${ctx.amzDate}\n${ctx.scope}\n${previousSignature}\n${EMPTY_SHA256_HEX}\n${chunkSha256Hex}`);
}

/** The signature of the trailer block ("name:value\n" per trailer), chained from the last chunk's. */
export function trailerSignature(ctx: ChunkSigningContext, previousSignature: string, canonicalTrailers: string): string {
  return hmacHex(ctx.signingKey, `AWS4-HMAC-SHA256-TRAILER\n${ctx.amzDate}\n${ctx.scope}\n${previousSignature}\n${sha256Hex(canonicalTrailers)}`);
}

/**
 * A dedup pool's configuration as a caller gives it (REST body, CLI flags), checked into a
 * DedupPoolConfig: every refusal is INVALID_ARGUMENT naming the fix. The tier settings are
 * checked and kept whether or not this daemon has tiering wired (a pool created now keeps them
 * for when it does); credentials never come with them: S3 access uses the AWS SDK's default
 * chain (environment, shared config files, instance or container role).
 */
import { CHUNK_HASH_ALGORITHMS, type DedupPoolConfig, type PoolTierConfig } from '../core/chunked-pools.js';
import { StorageError } from '../core/errors.js';

/** What a dedup pool's name must be: it also names the pool's chunk index tables. */
const DEDUP_POOL_NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** S3 bucket names (the rules every S3 server accepts). */
const BUCKET_PATTERN = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const REGION_PATTERN = /^[a-z0-9][a-z0-9-]{0,31}$/;
/** A cooling period shorter than this would move packs that are still being written and read. */
export const COOLING_MS_MIN = 60_000;

/** The shortest seal-after: sealing more often than this would freeze a writing guest over and over. */
export const SEAL_AFTER_MS_MIN = 1000;
/** The smallest seal-above: a smaller active layer is not worth a layer of its own. */
export const SEAL_ABOVE_BYTES_MIN = 1024 * 1024;

export interface DedupPoolRequest {
  hash?: string | undefined;
  sealAfterMs?: number | undefined;
  sealAboveBytes?: number | undefined;
  tier?: { url: string; s3Endpoint?: string | undefined; s3Region?: string | undefined; coolingMs?: number | undefined } | undefined;
}

function invalid(message: string): StorageError {
  return new StorageError('INVALID_ARGUMENT', message);
}

export function checkDedupPoolConfig(pool: string, request: DedupPoolRequest): DedupPoolConfig {
  if (!DEDUP_POOL_NAME_PATTERN.test(pool)) {
    throw invalid(`a dedup pool's name also names its chunk index: '${pool}' must be 1 to 63 lower-case letters, digits and dashes`);
  }
  const hash = request.hash ?? 'blake3';
  if (!(CHUNK_HASH_ALGORITHMS as readonly string[]).includes(hash)) {
    throw invalid(`unknown chunk hash '${hash}': use ${CHUNK_HASH_ALGORITHMS.join(' or ')} (blake3, the default, needs no byte compare before sharing)`);
  }
  const tier = request.tier === undefined ? undefined : checkTier(request.tier);
  const { sealAfterMs, sealAboveBytes } = request;
  if (sealAfterMs !== undefined && (!Number.isSafeInteger(sealAfterMs) || sealAfterMs < SEAL_AFTER_MS_MIN)) {
    throw invalid(`seal-after ${String(sealAfterMs)} ms is too short: give at least 1 second (e.g. 30s, 10m, 1h)`);
  }
  if (sealAboveBytes !== undefined && (!Number.isSafeInteger(sealAboveBytes) || sealAboveBytes < SEAL_ABOVE_BYTES_MIN)) {
    throw invalid(`seal-above ${String(sealAboveBytes)} bytes is too small: give at least 1 MiB (e.g. 256M, 4G)`);
  }
  return {
    hash: hash as DedupPoolConfig['hash'],
    ...(tier === undefined ? {} : { tier }),
    ...(sealAfterMs === undefined ? {} : { sealAfterMs }),
    ...(sealAboveBytes === undefined ? {} : { sealAboveBytes }),
  };
}

function checkTier(tier: NonNullable<DedupPoolRequest['tier']>): PoolTierConfig {
  let url: URL;
  try {
    url = new URL(tier.url);
  } catch {
    throw invalid(`tier '${tier.url}' is not a URL: use s3://BUCKET/PREFIX or file:///absolute/path`);
  }
  if (url.username !== '' || url.password !== '') {
    throw invalid(`tier '${redact(url)}' carries credentials: remove them; S3 credentials come from the AWS default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, an instance role)`);
  }
  if (url.search !== '' || url.hash !== '') throw invalid(`tier '${tier.url}' has a query or fragment: use s3://BUCKET/PREFIX or file:///absolute/path`);
  // URL would resolve dot parts away, silently naming another prefix or folder: refuse them.
  if (/\/\.\.?(\/|$)/.test(tier.url.replace(/^[a-z0-9]+:\/\//i, '/'))) {
    throw invalid(`tier '${tier.url}' has '.' or '..' parts: name the prefix or folder itself (s3://BUCKET/some/prefix, file:///absolute/path)`);
  }
  const coolingMs = tier.coolingMs;
  if (coolingMs !== undefined && (!Number.isSafeInteger(coolingMs) || coolingMs < COOLING_MS_MIN)) {
    throw invalid(`cooling period ${String(coolingMs)} ms is too short: give at least 1 minute (e.g. 10m, 24h, 7d)`);
  }
  const cooling = coolingMs === undefined ? {} : { coolingMs };
  if (url.protocol === 'file:') {
    if (tier.s3Endpoint !== undefined || tier.s3Region !== undefined) {
      throw invalid(`the S3 endpoint and region apply to an s3:// tier, not to '${tier.url}': drop them`);
    }
    if (url.host !== '' && url.host !== 'localhost') throw invalid(`tier '${tier.url}' names host '${url.host}': a file tier is a local folder, file:///absolute/path`);
    const folder = decodeURIComponent(url.pathname);
    if (folder === '/' || folder.split('/').some((part) => part === '..')) {
      throw invalid(`tier '${tier.url}' must name a folder of its own: file:///absolute/path, without '..'`);
    }
    return { url: `file://${folder.replace(/\/+$/, '')}`, ...cooling };
  }
  if (url.protocol !== 's3:') throw invalid(`tier '${tier.url}' has scheme '${url.protocol}': use s3://BUCKET/PREFIX or file:///absolute/path`);
  const bucket = url.hostname;
  if (!BUCKET_PATTERN.test(bucket) || bucket.includes('..')) {
    throw invalid(`'${bucket}' is not an S3 bucket name: 3 to 63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit`);
  }
  if (url.port !== '') throw invalid(`tier '${tier.url}' has a port: give the server with --s3-endpoint http://HOST:PORT and the bucket in the tier URL`);
  const prefix = decodeURIComponent(url.pathname).replace(/^\/+/, '').replace(/\/+$/, '');
  if (prefix.split('/').some((part) => part === '.' || part === '..') || prefix.includes('//')) {
    throw invalid(`the key prefix '${prefix}' of tier '${tier.url}' has empty, '.' or '..' parts: use s3://BUCKET/some/prefix`);
  }
  const endpoint = tier.s3Endpoint === undefined ? undefined : checkEndpoint(tier.s3Endpoint);
  if (tier.s3Region !== undefined && !REGION_PATTERN.test(tier.s3Region)) {
    throw invalid(`'${tier.s3Region}' is not an S3 region name: lower-case letters, digits and '-' (e.g. us-east-1)`);
  }
  if (endpoint === undefined && tier.s3Region === undefined) {
    throw invalid(`tier '${tier.url}' needs --s3-region (AWS) or --s3-endpoint URL (another S3 server)`);
  }
  return {
    url: `s3://${bucket}${prefix === '' ? '' : `/${prefix}`}`,
    ...(endpoint === undefined ? {} : { s3Endpoint: endpoint }),
    ...(tier.s3Region === undefined ? {} : { s3Region: tier.s3Region }),
    ...cooling,
  };
}

function checkEndpoint(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalid(`S3 endpoint '${text}' is not a URL: give http://HOST:PORT or https://HOST`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid(`S3 endpoint '${text}' must be http:// or https://`);
  if (url.username !== '' || url.password !== '') {
    throw invalid(`S3 endpoint '${redact(url)}' carries credentials: remove them; they come from the AWS default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, an instance role)`);
  }
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
    throw invalid(`S3 endpoint '${text}' has a path or query: give the server only (http://HOST:PORT); the bucket and prefix go in the tier URL`);
  }
  return url.origin;
}

/**
 * True when two pools' tiers (as checkTier records them) would see each other's objects: the same
 * S3 bucket (whatever the endpoint: two spellings may name one server) or file system, with one
 * key prefix or folder equal to or inside the other. A pool lists its whole prefix for orphan
 * packs, so a GC of either would delete the other's packs.
 */
export function tiersOverlap(a: string, b: string): boolean {
  const parts = (url: string): { root: string; path: string[] } => {
    const m = /^(s3:\/\/[^/]+|file:\/\/)(.*)$/.exec(url);
    const root = m?.[1] ?? url;
    return { root, path: (m?.[2] ?? '').split('/').filter((part) => part !== '') };
  };
  const x = parts(a);
  const y = parts(b);
  if (x.root !== y.root) return false;
  const n = Math.min(x.path.length, y.path.length);
  for (let i = 0; i < n; i++) if (x.path[i] !== y.path[i]) return false;
  return true;
}

/** The URL without its credentials (they never reach a message or a log). */
function redact(url: URL): string {
  const copy = new URL(url.href);
  copy.username = '';
  copy.password = '';
  return copy.href;
}

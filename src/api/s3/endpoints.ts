/**
 * Which S3 operation a request is, decided from the method, the addressing (bucket and key) and
 * the query before any handler runs (Garage's approach): handlers receive a typed endpoint, never
 * a method and a path to puzzle over. Addressing is path-style (/bucket/key) or virtual-host
 * style (bucket.<domain>/key) for the configured domains. Operations S3 has and this endpoint
 * does not are refused here with NotImplemented naming them.
 */
import { S3Error } from './errors.js';
import { parseQuery, percentDecode, splitTarget } from './uri.js';

export const S3_ENDPOINTS = [
  'ListBuckets',
  'CreateBucket',
  'HeadBucket',
  'DeleteBucket',
  'GetBucketLocation',
  'GetBucketVersioning',
  'PutBucketVersioning',
  'ListObjects',
  'ListObjectsV2',
  'ListObjectVersions',
  'PutObject',
  'GetObject',
  'HeadObject',
  'DeleteObject',
  'DeleteObjects',
  'CopyObject',
  'CreateMultipartUpload',
  'UploadPart',
  'UploadPartCopy',
  'CompleteMultipartUpload',
  'AbortMultipartUpload',
  'ListParts',
  'ListMultipartUploads',
  'GetBucketAcl',
  'PutBucketAcl',
  'GetObjectAcl',
  'PutObjectAcl',
] as const;
export type S3Endpoint = (typeof S3_ENDPOINTS)[number];

/** A request resolved: what it is and what it names. */
export interface ResolvedRequest {
  readonly endpoint: S3Endpoint;
  /** undefined only for ListBuckets. */
  readonly bucket: string | undefined;
  /** The object key (decoded); undefined for service and bucket operations. */
  readonly key: string | undefined;
  /** The query, decoded; later values of a repeated name win. */
  readonly query: ReadonlyMap<string, string>;
}

/** S3 keys are at most 1,024 bytes of UTF-8. */
export const MAX_KEY_BYTES = 1024;

/** Sub-resources S3 has that this endpoint does not serve (yet), by the words a refusal uses. */
const UNSUPPORTED_SUBRESOURCES: Readonly<Record<string, string>> = {
  policy: 'bucket policies',
  cors: 'CORS configuration',
  lifecycle: 'lifecycle configuration',
  tagging: 'tagging',
  website: 'website hosting',
  encryption: 'bucket encryption',
  'object-lock': 'object lock',
  retention: 'object retention',
  'legal-hold': 'legal holds',
  notification: 'event notifications',
  logging: 'access logging',
  replication: 'replication',
  ownershipControls: 'ownership controls',
  publicAccessBlock: 'public access blocks',
  accelerate: 'transfer acceleration',
  requestPayment: 'requester pays',
  analytics: 'analytics',
  metrics: 'metrics configuration',
  inventory: 'inventory',
  'intelligent-tiering': 'intelligent tiering',
  attributes: 'GetObjectAttributes',
  torrent: 'torrents',
  restore: 'restore',
  select: 'S3 Select',
  policyStatus: 'policy status',
};

/** The host without its port, lower-cased. */
function hostName(host: string): string {
  const h = host.trim().toLowerCase();
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1);
  const colon = h.lastIndexOf(':');
  return colon < 0 ? h : h.slice(0, colon);
}

/** Bucket and key of a request: virtual-host style when the host is a subdomain of a configured domain. */
export function addressOf(url: string, host: string | undefined, domains: readonly string[]): { bucket: string | undefined; key: string | undefined } {
  const { rawPath } = splitTarget(url);
  if (!rawPath.startsWith('/')) throw new S3Error('InvalidArgument', `the request target '${rawPath.slice(0, 100)}' must start with '/'`);
  const name = host === undefined ? '' : hostName(host);
  const domain = domains.find((d) => name.endsWith(`.${d}`));
  if (domain !== undefined) {
    const bucket = name.slice(0, name.length - domain.length - 1);
    const keyText = rawPath.slice(1);
    return { bucket, key: keyText === '' ? undefined : percentDecode(keyText) };
  }
  const slash = rawPath.indexOf('/', 1);
  const bucketText = slash < 0 ? rawPath.slice(1) : rawPath.slice(1, slash);
  const keyText = slash < 0 ? '' : rawPath.slice(slash + 1);
  if (bucketText === '' && slash >= 0) throw new S3Error('InvalidBucketName', `the path '${rawPath.slice(0, 100)}' has an empty bucket name (a doubled '/'?); use /bucket/key`);
  return { bucket: bucketText === '' ? undefined : percentDecode(bucketText), key: keyText === '' ? undefined : percentDecode(keyText) };
}

function unsupported(query: ReadonlyMap<string, string>): S3Error | undefined {
  for (const name of query.keys()) {
    const what = UNSUPPORTED_SUBRESOURCES[name];
    if (what !== undefined) return new S3Error('NotImplemented', `${what} (?${name}) are not supported by this endpoint`);
  }
  return undefined;
}

/**
 * GetObject and HeadObject of one part (?partNumber=N) are not served: answering with the whole
 * object, as a read that ignored the parameter would, gives a client that fetches a large object
 * part by part the whole object once per part.
 */
function partNumberRead(query: ReadonlyMap<string, string>): S3Error | undefined {
  if (!query.has('partNumber')) return undefined;
  return new S3Error('NotImplemented', 'reading an object by part number (?partNumber) is not supported by this endpoint; read byte ranges instead (Range: bytes=first-last)');
}

function methodNotAllowed(method: string, target: string): S3Error {
  return new S3Error('MethodNotAllowed', `the method ${method} is not allowed against ${target}`);
}

/** The endpoint of a request, or an S3Error for what S3 does not do or this endpoint does not serve. */
export function resolveEndpoint(method: string, url: string, headers: { host?: string | undefined; copySource?: string | undefined }, domains: readonly string[]): ResolvedRequest {
  const { bucket, key } = addressOf(url, headers.host, domains);
  const query = new Map(parseQuery(splitTarget(url).rawQuery));
  const has = (name: string): boolean => query.has(name);
  const resolved = (endpoint: S3Endpoint): ResolvedRequest => ({ endpoint, bucket, key, query });
  if (key !== undefined && Buffer.byteLength(key) > MAX_KEY_BYTES) throw new S3Error('KeyTooLongError', `the key is ${Buffer.byteLength(key)} bytes; keys are at most ${MAX_KEY_BYTES} bytes of UTF-8`);
  if (bucket === undefined) {
    if (method === 'GET') return resolved('ListBuckets');
    throw methodNotAllowed(method, 'the service (name a bucket: /bucket or bucket.<domain>)');
  }
  if (key === undefined) {
    switch (method) {
      case 'HEAD':
        return resolved('HeadBucket');
      case 'GET':
        if (has('location')) return resolved('GetBucketLocation');
        if (has('versioning')) return resolved('GetBucketVersioning');
        if (has('acl')) return resolved('GetBucketAcl');
        if (has('uploads')) return resolved('ListMultipartUploads');
        if (has('versions')) return resolved('ListObjectVersions');
        throwIf(unsupported(query));
        return resolved(query.get('list-type') === '2' ? 'ListObjectsV2' : 'ListObjects');
      case 'PUT':
        if (has('versioning')) return resolved('PutBucketVersioning');
        if (has('acl')) return resolved('PutBucketAcl');
        throwIf(unsupported(query));
        return resolved('CreateBucket');
      case 'DELETE':
        throwIf(unsupported(query));
        return resolved('DeleteBucket');
      case 'POST':
        if (has('delete')) return resolved('DeleteObjects');
        throw methodNotAllowed(method, `the bucket '${bucket}' (only POST ?delete)`);
      default:
        throw methodNotAllowed(method, `the bucket '${bucket}'`);
    }
  }
  switch (method) {
    case 'HEAD':
      throwIf(partNumberRead(query));
      return resolved('HeadObject');
    case 'GET':
      if (has('uploadId')) return resolved('ListParts');
      if (has('acl')) return resolved('GetObjectAcl');
      throwIf(unsupported(query));
      throwIf(partNumberRead(query));
      return resolved('GetObject');
    case 'PUT':
      if (has('partNumber') && has('uploadId')) return resolved(headers.copySource !== undefined ? 'UploadPartCopy' : 'UploadPart');
      if (has('partNumber') || has('uploadId')) throw new S3Error('InvalidRequest', 'a part upload needs both partNumber and uploadId');
      if (has('acl')) return resolved('PutObjectAcl');
      throwIf(unsupported(query));
      return resolved(headers.copySource !== undefined ? 'CopyObject' : 'PutObject');
    case 'POST':
      if (has('uploads')) return resolved('CreateMultipartUpload');
      if (has('uploadId')) return resolved('CompleteMultipartUpload');
      throwIf(unsupported(query));
      throw methodNotAllowed(method, 'an object (POST ?uploads or ?uploadId only)');
    case 'DELETE':
      if (has('uploadId')) return resolved('AbortMultipartUpload');
      throwIf(unsupported(query));
      return resolved('DeleteObject');
    default:
      throw methodNotAllowed(method, 'an object');
  }
}

function throwIf(error: S3Error | undefined): void {
  if (error !== undefined) throw error;
}

/**
 * S3's rules for bucket names and object keys, checked before anything is stored, with a message
 * that names the rule broken (AWS's general purpose bucket naming rules).
 */
import { ObjectError } from './errors.js';

export const BUCKET_NAME_LENGTH_MIN = 3;
export const BUCKET_NAME_LENGTH_MAX = 63;
/** An object key's most UTF-8 bytes. */
export const OBJECT_KEY_BYTES_MAX = 1024;

const RESERVED_PREFIXES = ['xn--', 'sthree-', 'amzn-s3-demo-'];
const RESERVED_SUFFIXES = ['-s3alias', '--ol-s3', '.mrap', '--x-s3', '--table-s3'];

/** Why `name` is not a valid bucket name, or undefined when it is. */
export function bucketNameProblem(name: string): string | undefined {
  if (name.length < BUCKET_NAME_LENGTH_MIN || name.length > BUCKET_NAME_LENGTH_MAX) {
    return `is ${name.length} characters long; a bucket name has ${BUCKET_NAME_LENGTH_MIN} to ${BUCKET_NAME_LENGTH_MAX}`;
  }
  if (!/^[a-z0-9.-]+$/.test(name)) return 'may hold only lower-case letters, digits, dots and hyphens';
  if (!/^[a-z0-9]/.test(name) || !/[a-z0-9]$/.test(name)) return 'must begin and end with a letter or a digit';
  if (name.includes('..')) return 'must not hold two adjacent dots';
  if (/^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name)) return 'must not look like an IP address';
  const prefix = RESERVED_PREFIXES.find((p) => name.startsWith(p));
  if (prefix !== undefined) return `must not begin with the reserved prefix "${prefix}"`;
  const suffix = RESERVED_SUFFIXES.find((s) => name.endsWith(s));
  if (suffix !== undefined) return `must not end with the reserved suffix "${suffix}"`;
  return undefined;
}

export function checkBucketName(name: string): void {
  const problem = bucketNameProblem(name);
  if (problem !== undefined) throw new ObjectError('InvalidBucketName', `bucket name "${name.slice(0, 80)}" ${problem}`);
}

/**
 * Object keys: 1 to 1024 UTF-8 bytes, without U+0000 (no catalog key holds it) or U+0001 (what ends
 * an object key inside a catalog key); S3's XML 1.0 listings cannot carry either.
 */
export function checkObjectKey(key: string): void {
  const bytes = Buffer.byteLength(key, 'utf8');
  if (bytes === 0) throw new ObjectError('InvalidArgument', 'an object key must not be empty');
  if (bytes > OBJECT_KEY_BYTES_MAX) throw new ObjectError('KeyTooLongError', `object key of ${bytes} bytes is longer than the ${OBJECT_KEY_BYTES_MAX} bytes S3 allows`);
  if (/[\u0000\u0001]/.test(key)) throw new ObjectError('InvalidArgument', 'an object key must not contain the control characters U+0000 or U+0001');
  if (/\p{Surrogate}/u.test(key)) throw new ObjectError('InvalidArgument', 'an object key must be valid UTF-8 (it holds a lone surrogate)');
}

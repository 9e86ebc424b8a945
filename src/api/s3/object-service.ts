/**
 * What the S3 endpoint needs of the object model (src/objects implements it; the daemon passes
 * it to the plugin). The protocol side owns HTTP, auth, XML and body checks; the object model
 * owns buckets, objects, versions and multipart over the catalog and chunk manifests.
 *
 * Types only, with no imports, so the object model can implement it structurally (or the lead can
 * move it to src/core when src/objects wants to name it: src/objects may not import src/api).
 *
 * Errors: throw StorageError. NOT_FOUND becomes NoSuchBucket for bucket operations and NoSuchKey
 * for object ones, ALREADY_EXISTS on CreateBucket becomes BucketAlreadyOwnedByYou (same owner) or
 * BucketAlreadyExists, BUSY on DeleteBucket becomes BucketNotEmpty. Where that is not precise
 * enough, set a string property `s3Code` on the error to the S3 error code (NoSuchUpload,
 * NoSuchVersion, InvalidPart, InvalidPartOrder, PreconditionFailed, InvalidRange, ...): the
 * endpoint uses it when it is one it knows.
 */

/** Who is asking (from the verified signature). */
export interface S3Principal {
  /** The user name owning the access key. */
  readonly owner: string;
  readonly accessKeyId: string;
}

export type BucketVersioning = 'Unversioned' | 'Enabled' | 'Suspended';

export interface BucketInfo {
  readonly name: string;
  readonly owner: string;
  /** ISO-8601 time. */
  readonly createdAt: string;
  readonly versioning: BucketVersioning;
}

/** An object's metadata as S3 reports it. */
export interface ObjectInfo {
  readonly key: string;
  readonly versionId: string | undefined;
  readonly sizeBytes: number;
  /** With its quotes, as S3 sends it: "md5hex" or "md5hex-N". */
  readonly etag: string;
  readonly lastModified: string;
  readonly contentType: string | undefined;
  /** x-amz-meta-* without the prefix. */
  readonly userMetadata: Readonly<Record<string, string>>;
  /** The checksum stored with the object (algorithm name -> base64), if any. */
  readonly checksums: Readonly<Record<string, string>>;
  readonly deleteMarker: boolean;
}

export interface ListObjectsQuery {
  readonly prefix: string;
  readonly delimiter: string | undefined;
  readonly maxKeys: number;
  /** V1 marker, V2 start-after or the decoded continuation token: list keys after this one. */
  readonly after: string | undefined;
}

export interface ListObjectsPage {
  readonly objects: readonly ObjectInfo[];
  readonly commonPrefixes: readonly string[];
  /** Set when truncated: where the next page starts (the endpoint encodes it as a token). */
  readonly nextAfter: string | undefined;
}

export interface PutObjectRequest {
  readonly bucket: string;
  readonly key: string;
  /** The checked body (payload.ts): an 'error' instead of 'end' when a check fails; commit only after 'end'. */
  readonly body: AsyncIterable<Uint8Array>;
  readonly sizeBytes: number | undefined;
  readonly contentType: string | undefined;
  readonly userMetadata: Readonly<Record<string, string>>;
  /** If-Match / If-None-Match of a conditional PUT. */
  readonly ifMatch: string | undefined;
  readonly ifNoneMatch: string | undefined;
}

export interface GetObjectRequest {
  readonly bucket: string;
  readonly key: string;
  readonly versionId: string | undefined;
  /** An inclusive byte range, already parsed from Range. */
  readonly range: { readonly start: number; readonly endInclusive: number } | undefined;
}

export interface CompletedPart {
  readonly partNumber: number;
  readonly etag: string;
}

export interface ObjectService {
  listBuckets(principal: S3Principal): Promise<BucketInfo[]>;
  /** ALREADY_EXISTS when the name is taken (by anyone). */
  createBucket(principal: S3Principal, name: string): Promise<BucketInfo>;
  /** NOT_FOUND when absent. */
  bucketInfo(principal: S3Principal, name: string): Promise<BucketInfo>;
  /** NOT_FOUND when absent; BUSY when it still holds objects or uploads. */
  deleteBucket(principal: S3Principal, name: string): Promise<void>;
  setBucketVersioning(principal: S3Principal, name: string, state: 'Enabled' | 'Suspended'): Promise<void>;

  listObjects(principal: S3Principal, bucket: string, query: ListObjectsQuery): Promise<ListObjectsPage>;
  putObject(principal: S3Principal, request: PutObjectRequest): Promise<ObjectInfo>;
  getObject(principal: S3Principal, request: GetObjectRequest): Promise<{ info: ObjectInfo; body: AsyncIterable<Uint8Array> }>;
  headObject(principal: S3Principal, request: GetObjectRequest): Promise<ObjectInfo>;
  /** A missing key is not an error (S3 answers 204 either way). */
  deleteObject(principal: S3Principal, bucket: string, key: string, versionId: string | undefined): Promise<{ versionId: string | undefined; deleteMarker: boolean }>;

  createMultipartUpload(principal: S3Principal, bucket: string, key: string, options: { contentType: string | undefined; userMetadata: Readonly<Record<string, string>> }): Promise<{ uploadId: string }>;
  uploadPart(principal: S3Principal, bucket: string, key: string, uploadId: string, partNumber: number, body: AsyncIterable<Uint8Array>, sizeBytes: number | undefined): Promise<{ etag: string }>;
  completeMultipartUpload(principal: S3Principal, bucket: string, key: string, uploadId: string, parts: readonly CompletedPart[]): Promise<ObjectInfo>;
  abortMultipartUpload(principal: S3Principal, bucket: string, key: string, uploadId: string): Promise<void>;
}

/**
 * The object model's records (catalog tables, schemas in tables.ts). Every record is small and
 * JSON: the bytes of an object live in the pool's ChunkRepository, named by a chunk manifest kept
 * apart from the record (manifest-storage.ts), so listing a thousand keys reads a thousand small
 * records and no manifest.
 */
import type { ChecksumAlgorithm } from './checksums.js';

export const VERSIONING_STATES = ['unversioned', 'enabled', 'suspended'] as const;
export type VersioningState = (typeof VERSIONING_STATES)[number];
export const CANNED_ACLS = ['private', 'public-read'] as const;
export type CannedAcl = (typeof CANNED_ACLS)[number];

export interface BucketRecord {
  readonly name: string;
  /** Names the bucket's objects in the catalog: a bucket deleted and created again starts afresh. */
  readonly id: string;
  /** The user id of the owner. */
  readonly owner: string;
  /** The pool whose ChunkRepository holds the bucket's chunks. */
  readonly pool: string;
  readonly createdAtMs: number;
  readonly versioning: VersioningState;
  readonly acl: CannedAcl;
  /**
   * Set by a bucket delete before it checks or purges the bucket's contents (bucket-removal.ts):
   * from then on no request reaches the bucket (NoSuchBucket), so nothing can land in it between
   * that check and the record's removal. A bucket a stopped daemon left so is settled at its next
   * start (bucket-removal.ts settleInterruptedRemoval): a purge is resumed, an empty bucket deleted,
   * a bucket that holds something and was not being purged serves again.
   */
  readonly deleting?: true;
  /** With `deleting`: the delete purges the bucket (`strata bucket delete --purge`), so a restart resumes it. */
  readonly purging?: true;
}

/**
 * Where a manifest is kept: a catalog value for small ones, a ChunkStore object for large ones;
 * 'inline': no manifest, the small object's bytes themselves are a catalog value (manifest-storage.ts).
 */
export type ManifestPlace = 'catalog' | 'chunk-store' | 'inline';

export interface ManifestRef {
  /** Unique per manifest (the id of the put that made it). */
  readonly id: string;
  readonly place: ManifestPlace;
}

/** The content headers stored with an object and returned on GET and HEAD. */
export interface ContentHeaders {
  readonly contentType?: string;
  readonly cacheControl?: string;
  readonly contentDisposition?: string;
  readonly contentEncoding?: string;
  readonly contentLanguage?: string;
  readonly expires?: string;
}

export interface StoredChecksum {
  readonly algorithm: ChecksumAlgorithm;
  /** base64, as S3 returns it (a composite one ends in "-<parts>"). */
  readonly value: string;
}

/** What describes an object's data (a version or a multipart part). */
export interface DataFacts {
  readonly sizeBytes: number;
  /** The ETag without quotes: hex MD5, or hex MD5 of the part MD5s + "-N". */
  readonly etag: string;
  readonly checksum?: StoredChecksum;
  readonly manifest: ManifestRef;
}

export interface ObjectVersionRecord {
  readonly bucketId: string;
  readonly key: string;
  /** "null" for the null version, else the same as `slot`. */
  readonly versionId: string;
  /** Orders the versions of a key, newest first (an inverted clock); unique. */
  readonly slot: string;
  readonly isDeleteMarker: boolean;
  readonly lastModifiedMs: number;
  readonly owner: string;
  /** Absent on a delete marker. */
  readonly data?: DataFacts & {
    readonly headers: ContentHeaders;
    /** x-amz-meta-* without the prefix, names lower case. */
    readonly userMetadata: Readonly<Record<string, string>>;
    /** Parts of a multipart object (absent: a single PUT or a copy). */
    readonly partCount?: number;
  };
}

export interface UploadRecord {
  readonly uploadId: string;
  readonly bucketId: string;
  readonly key: string;
  readonly owner: string;
  readonly initiatedAtMs: number;
  readonly headers: ContentHeaders;
  readonly userMetadata: Readonly<Record<string, string>>;
  readonly checksumAlgorithm?: ChecksumAlgorithm;
}

export interface PartRecord extends DataFacts {
  readonly uploadId: string;
  readonly partNumber: number;
  readonly lastModifiedMs: number;
}

/**
 * A reference-adding call of a put, journalled so that whoever finds it after a crash knows
 * whether the call was applied. Two kinds (put-journal.ts):
 *   - recorded (`appliedWithRecord`): the record committed in the very catalog transaction that
 *     added the references (the repository's counts share the catalog), so the record exists
 *     exactly when they do, and goes in the transaction that drops them;
 *   - marked: the record was made durable before the call, which carries its own marker chunk
 *     (unique bytes) whose count the same atomic call raises to `markerRefsWhenApplied`.
 */
export type ReferenceStepRecord = RecordedStepRecord | MarkedStepRecord;

interface StepFields {
  readonly putId: string;
  readonly seq: number;
  readonly pool: string;
  /** The chunks the call references (one entry per reference). */
  readonly hashes: readonly string[];
}

export interface RecordedStepRecord extends StepFields {
  readonly appliedWithRecord: true;
}

export interface MarkedStepRecord extends StepFields {
  readonly marker: string;
  /** 1: added with the data (addReferences); 2: the marker was added first, then the hashes by hash. */
  readonly markerRefsWhenApplied: 1 | 2;
}

export function isMarkedStep(step: ReferenceStepRecord): step is MarkedStepRecord {
  return !('appliedWithRecord' in step);
}

/** A put (or part upload, or copy) that is adding references: 'writing' until its record commits. */
export interface PendingPutRecord {
  readonly putId: string;
  readonly pool: string;
  readonly state: 'writing' | 'committed';
  readonly startedAtMs: number;
}

/** References to give back: a manifest no record names any more, or every part of an upload. */
export type ReleaseRecord =
  | { readonly id: string; readonly kind: 'manifest'; readonly pool: string; readonly manifest: ManifestRef; readonly nextHash: number }
  | { readonly id: string; readonly kind: 'upload-parts'; readonly pool: string; readonly uploadId: string };

/**
 * The object model as a holder of chunk references, for a dedup scrub's reference audit
 * (src/store/dedup/scrub.ts): every version's data, every part (of uploads in progress and of
 * uploads whose parts are being released), what a release has not given back yet, and what the
 * journalled steps of puts in progress hold (their chunks when applied, and the markers of
 * marked steps). A leak the model accepts by design (a release cut off by a crash) is then a
 * count above what the holders hold, which the scrub confirms and repairs. Read a page at a time; an audit path, not a
 * request path.
 */
import { isStorageError } from '../core/errors.js';
import type { ReferenceHolder, ReferenceSource, UnreadableHolder } from '../store/dedup/scrub.js';
import type { ChunkHash } from '../store/dedup/repository.js';
import type { ObjectContext } from './context.js';
import { loadManifest } from './manifest-storage.js';
import { isMarkedStep, type ManifestRef } from './records.js';

const PAGE = 500;

type Holder = ReferenceHolder | UnreadableHolder;

/** Every holder of `pool`'s references in the object model. */
export function objectReferenceHolders(context: ObjectContext, pool: string): ReferenceSource {
  return async function* (): AsyncGenerator<Holder> {
    yield* versionsAndParts(context, pool);
    yield* releases(context, pool);
    yield* journalledPuts(context, pool);
  };
}

async function holderOf(context: ObjectContext, name: string, ref: ManifestRef, fromHash = 0): Promise<Holder | undefined> {
  if (ref.place === 'inline') return { name, hashes: [] }; // a small object's bytes hold no chunk reference
  try {
    const manifest = await loadManifest(context, ref);
    if (manifest === undefined) return undefined; // removed since the record was read
    const hashes = [...manifest.storedHashes()];
    return { name, hashes: fromHash === 0 ? hashes : hashes.slice(fromHash) };
  } catch (err) {
    if (!isStorageError(err, 'CORRUPT') && !isStorageError(err, 'UNSUPPORTED')) throw err;
    return { name, unreadable: err.message };
  }
}

async function* pages<R>(read: (after: string | undefined) => Promise<{ records: { record: R }[]; nextAfter?: string }>): AsyncGenerator<R> {
  let after: string | undefined;
  do {
    const page = await read(after);
    for (const { record } of page.records) yield record;
    after = page.nextAfter;
  } while (after !== undefined);
}

async function* partsOf(context: ObjectContext, uploadId: string, what: string): AsyncGenerator<Holder> {
  for await (const part of pages((after) => context.tables.parts.prefixPage(`${uploadId}/`, { limit: PAGE, ...(after === undefined ? {} : { after }) }))) {
    const holder = await holderOf(context, `${what} part ${part.partNumber}`, part.manifest);
    if (holder !== undefined) yield holder;
  }
}

async function* versionsAndParts(context: ObjectContext, pool: string): AsyncGenerator<Holder> {
  for await (const bucket of pages((after) => context.tables.buckets.page({ limit: PAGE, ...(after === undefined ? {} : { after }) }))) {
    if (bucket.pool !== pool) continue;
    for await (const version of pages((after) => context.tables.versions.prefixPage(`${bucket.id}/`, { limit: PAGE, ...(after === undefined ? {} : { after }) }))) {
      if (version.data === undefined) continue;
      const holder = await holderOf(context, `object ${bucket.name}/${version.key} version ${version.versionId}`, version.data.manifest);
      if (holder !== undefined) yield holder;
    }
    for await (const upload of pages((after) => context.tables.uploads.indexPage('key', `${bucket.id}/`, { limit: PAGE, ...(after === undefined ? {} : { after }) }))) {
      yield* partsOf(context, upload.uploadId, `upload ${upload.uploadId} of ${bucket.name}/${upload.key}`);
    }
  }
}

async function* releases(context: ObjectContext, pool: string): AsyncGenerator<Holder> {
  for await (const release of pages((after) => context.tables.releases.page({ limit: PAGE, ...(after === undefined ? {} : { after }) }))) {
    if (release.pool !== pool) continue;
    if (release.kind === 'upload-parts') {
      yield* partsOf(context, release.uploadId, `released upload ${release.uploadId}`);
    } else {
      const holder = await holderOf(context, `release ${release.id}`, release.manifest, release.nextHash);
      if (holder !== undefined) yield holder;
    }
  }
}

async function* journalledPuts(context: ObjectContext, pool: string): AsyncGenerator<Holder> {
  const repository = await context.repositoryOf(pool);
  for await (const put of pages((after) => context.tables.puts.page({ limit: PAGE, ...(after === undefined ? {} : { after }) }))) {
    if (put.pool !== pool) continue;
    for await (const step of pages((after) => context.tables.steps.prefixPage(`${put.putId}/`, { limit: PAGE, ...(after === undefined ? {} : { after }) }))) {
      if (!isMarkedStep(step)) {
        // A recorded step exists exactly when its references do: a put still writing holds them.
        yield { name: `put ${put.putId} step ${step.seq}`, hashes: put.state === 'writing' ? [...step.hashes] : [] };
        continue;
      }
      const markerRefs = await repository.referenceCount(step.marker);
      if (markerRefs === 0) continue;
      // Applied steps of a put still writing hold their chunks; a committed put's version holds them.
      const hashes: ChunkHash[] = put.state === 'writing' && markerRefs === step.markerRefsWhenApplied ? [...step.hashes] : [];
      for (let i = 0; i < markerRefs; i++) hashes.push(step.marker);
      yield { name: `put ${put.putId} step ${step.seq}`, hashes };
    }
  }
}

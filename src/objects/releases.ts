/**
 * Giving references back. A record that stops naming data (a version deleted or replaced, a part
 * replaced, an upload aborted or completed without some parts) is removed in the same transaction
 * that writes a release record; the references are dropped afterwards, a bounded call at a time,
 * and the release record goes last. The record notes the next hash before each call is made, so a
 * crash can leak at most one call's references (a reference audit reclaims them) and never drops
 * a reference twice, which could take a chunk from another object.
 */
import { TxnBuilder, type Versioned } from '../meta/table.js';
import { HASHES_PER_CALL } from '../store/chunked/seal.js';
import type { ObjectContext } from './context.js';
import { loadManifest, removeManifest } from './manifest-storage.js';
import type { ManifestRef, ReleaseRecord } from './records.js';

/** Parts moved to their own release per transaction when an upload's parts are given back. */
const PARTS_PER_TXN = 100;

/** Adds to `txn` a release of `manifest` (whose record the same transaction removes); returns its id. */
export function releaseManifestInto(context: ObjectContext, txn: TxnBuilder, pool: string, manifest: ManifestRef): string {
  const id = `m-${manifest.id}`;
  context.tables.releases.put(txn, { id, kind: 'manifest', pool, manifest, nextHash: 0 });
  return id;
}

/** Adds to `txn` a release of every part still recorded for `uploadId` (the upload record goes in the same transaction). */
export function releaseUploadPartsInto(context: ObjectContext, txn: TxnBuilder, pool: string, uploadId: string): string {
  const id = uploadPartsReleaseId(uploadId);
  context.tables.releases.put(txn, { id, kind: 'upload-parts', pool, uploadId });
  return id;
}

export function uploadPartsReleaseId(uploadId: string): string {
  return `u-${uploadId}`;
}

/** Runs the releases `ids` now (after their transaction committed). */
export async function runReleases(context: ObjectContext, ids: readonly string[]): Promise<void> {
  for (const id of ids) {
    const record = await context.tables.releases.get(id);
    if (record !== undefined) await runRelease(context, record);
  }
}

export async function runRelease(context: ObjectContext, release: Versioned<ReleaseRecord>): Promise<void> {
  if (release.record.kind === 'upload-parts') {
    await releaseParts(context, release.record.pool, release.record.uploadId);
    const txn = new TxnBuilder();
    context.tables.releases.delete(txn, release);
    await txn.commit(context.catalog);
    return;
  }
  const { pool, manifest: ref } = release.record;
  // A small object's bytes (inline) hold no chunk reference: they only go with the record.
  const manifest = ref.place === 'inline' ? undefined : await loadManifest(context, ref);
  let current = release;
  if (manifest !== undefined) {
    const repository = await context.repositoryOf(pool);
    const hashes = [...manifest.storedHashes()];
    for (let from = release.record.nextHash; from < hashes.length; from += HASHES_PER_CALL) {
      const to = Math.min(hashes.length, from + HASHES_PER_CALL);
      const advance = new TxnBuilder();
      const next: ReleaseRecord = { ...release.record, nextHash: to };
      context.tables.releases.put(advance, next, current);
      current = { record: next, modRevision: await advance.commit(context.catalog) };
      await repository.dropReferences(hashes.slice(from, to));
    }
  }
  const txn = new TxnBuilder();
  txn.ops.push(...(await removeManifest(context, ref)));
  context.tables.releases.delete(txn, current);
  await txn.commit(context.catalog);
}

/** Moves each part of the upload to a manifest release of its own and runs it. */
async function releaseParts(context: ObjectContext, pool: string, uploadId: string): Promise<void> {
  for (;;) {
    const page = await context.tables.parts.prefixPage(`${uploadId}/`, { limit: PARTS_PER_TXN });
    if (page.records.length === 0) return;
    const txn = new TxnBuilder();
    const ids: string[] = [];
    for (const part of page.records) {
      context.tables.parts.delete(txn, part);
      ids.push(releaseManifestInto(context, txn, pool, part.record.manifest));
    }
    await txn.commit(context.catalog);
    await runReleases(context, ids);
  }
}

/** Every release still recorded (start-up recovery), a page at a time. */
export async function runPendingReleases(context: ObjectContext): Promise<number> {
  let ran = 0;
  for (;;) {
    const page = await context.tables.releases.page({ limit: 100 });
    if (page.records.length === 0) return ran;
    for (const release of page.records) {
      await runRelease(context, release);
      ran++;
    }
  }
}

/** The pools of the releases still recorded, for start-up recovery's reference audit. */
export async function poolsWithPendingReleases(context: ObjectContext): Promise<string[]> {
  const pools = new Set<string>();
  let after: string | undefined;
  do {
    const page = await context.tables.releases.page({ limit: 500, ...(after === undefined ? {} : { after }) });
    for (const { record } of page.records) pools.add(record.pool);
    after = page.nextAfter;
  } while (after !== undefined);
  return [...pools];
}

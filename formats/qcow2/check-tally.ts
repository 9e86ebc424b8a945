/**
 * The reference count of every host cluster, as check() counts it from the metadata, with
 * qemu-img check's rule for the end of the file: the last cluster may be only partly written, so a
 * region may reach less than one cluster past the end (that cluster is counted, and compared); a
 * region reaching a whole cluster or more past the end is a corruption, and none of it is counted.
 */
import { StorageError } from '../../src/core/errors.js';
import type { Qcow2CheckResult } from './types.js';

/** Refuse to check images whose file would need an absurd per-cluster array. */
export const MAX_CHECKED_CLUSTERS = 1 << 28;

export const hex = (n: number): string => `0x${n.toString(16)}`;

export function newCheckResult(): Qcow2CheckResult {
  return {
    checkErrors: 0,
    corruptions: 0,
    leaks: 0,
    corruptionsFixed: 0,
    leaksFixed: 0,
    imageEndOffset: 0,
    totalClusters: 0,
    allocatedClusters: 0,
    fragmentedClusters: 0,
    compressedClusters: 0,
    messages: [],
  };
}

/** Counts one corruption with its message. */
export function corruption(result: Qcow2CheckResult, message: string): void {
  result.corruptions++;
  result.messages.push(message);
}

export class ReferenceTally {
  private readonly counts: Uint32Array;
  /** Clusters compared with the stored refcounts: the file's, plus one a region reaches into. */
  clusterCount: number;
  /** Clusters past the end that a refused region covers: their refcounts are not leaks. */
  readonly referencedPastEnd = new Set<number>();

  constructor(
    readonly clusterSizeBytes: number,
    /** Where the file ends (the check's notion of it: see checkImage). */
    readonly fileEndBytes: number,
    private readonly result: Qcow2CheckResult,
  ) {
    this.clusterCount = Math.ceil(fileEndBytes / clusterSizeBytes);
    if (this.clusterCount + 1 > MAX_CHECKED_CLUSTERS) {
      throw new StorageError('LIMIT_EXCEEDED', `image file has ${this.clusterCount} clusters; check handles at most ${MAX_CHECKED_CLUSTERS}`);
    }
    // One spare: a region may reach into the cluster after the file's last partial one.
    this.counts = new Uint32Array(this.clusterCount + 1);
  }

  /**
   * Counts a reference to every cluster that [offset, offset + lengthBytes) touches. Returns false
   * (after counting a corruption) when the region reaches one cluster or more past the end.
   */
  add(offset: number, lengthBytes: number, what: string): boolean {
    if (lengthBytes <= 0) return true;
    const cs = this.clusterSizeBytes;
    if (offset + lengthBytes - this.fileEndBytes >= cs) {
      corruption(
        this.result,
        `ERROR: counting reference for region exceeding the end of the file by one cluster or more: ` +
          `offset ${hex(offset)} size ${hex(lengthBytes)} (${what})`,
      );
      const lastPastEnd = Math.floor((offset + lengthBytes - 1) / this.clusterSizeBytes);
      for (let c = Math.floor(offset / this.clusterSizeBytes); c <= lastPastEnd; c++) this.referencedPastEnd.add(c);
      return false;
    }
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + lengthBytes - 1) / cs);
    // Within the spare cluster by the rule above.
    if (last >= this.clusterCount) this.clusterCount = last + 1;
    for (let c = first; c <= last; c++) this.counts[c]!++;
    return true;
  }

  count(cluster: number): number {
    return cluster < this.counts.length ? this.counts[cluster]! : 0;
  }

  /** Takes back one reference (the old refcount structure, which a rebuild replaces). */
  remove(cluster: number): void {
    this.counts[cluster]!--;
  }

  /** The counts of the compared clusters, for a rebuild of the refcount structure. */
  references(): Uint32Array {
    return this.counts.subarray(0, this.clusterCount);
  }
}

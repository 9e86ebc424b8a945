/**
 * Where a rebuilt refcount structure goes (check -r all), chosen as qemu-img check -r all chooses,
 * so that a repaired image has the same layout (and image end) either way: the refcount block of
 * each range of clusters in the first free cluster at or after the start of that range (and after
 * the previous allocation), the table in the first free run after that, and blocks for whatever
 * those allocations add, until nothing changes.
 *
 * Free means: no reference was counted, and not part of the old refcount structure. The old
 * structure stays intact until the header names the new one, so a crash in the middle of the
 * rebuild leaves the image as it was; everything else unreferenced holds nothing anyone reads.
 */

export interface RefcountStructurePlan {
  /** Refcount table index -> cluster of its new block. */
  blockClusters: Map<number, number>;
  tableCluster: number;
  tableClusters: number;
  /** The new structure's clusters (each gets refcount 1). */
  allocated: Set<number>;
}

export function planRefcountStructure(
  references: Uint32Array,
  oldStructure: ReadonlySet<number>,
  entriesPerBlock: number,
  clusterSizeBytes: number,
): RefcountStructurePlan {
  const allocated = new Set<number>();
  const inUse = (cluster: number) => (references[cluster] ?? 0) > 0 || oldStructure.has(cluster) || allocated.has(cluster);
  /** Nothing before it is free; it only moves forward (a block never goes before its range). */
  let firstFree = 0;
  /** The first run of `count` free clusters at or after max(from, firstFree). */
  const allocate = (count: number, from: number): number => {
    firstFree = Math.max(firstFree, from);
    while (inUse(firstFree)) firstFree++;
    let start = firstFree;
    for (let run = 0; run < count; ) {
      if (inUse(start + run)) {
        start += run + 1;
        run = 0;
      } else {
        run++;
      }
    }
    for (let i = 0; i < count; i++) allocated.add(start + i);
    return start;
  };

  const blockClusters = new Map<number, number>();
  const entriesPerTableCluster = clusterSizeBytes / 8;
  let tableCluster = -1;
  let tableClusters = 0;
  for (let guard = 0; ; guard++) {
    if (guard > 64) throw new Error('assertion failed: refcount structure plan did not converge');
    let changed = false;
    // Blocks for every range holding a counted cluster or a new one, in order.
    let lastCluster = references.length - 1;
    for (const c of allocated) lastCluster = Math.max(lastCluster, c);
    const ranges = Math.ceil((lastCluster + 1) / entriesPerBlock);
    for (let range = 0; range < ranges; range++) {
      if (blockClusters.has(range)) continue;
      const first = range * entriesPerBlock;
      const end = Math.min(first + entriesPerBlock, lastCluster + 1);
      let needed = false;
      for (let c = first; c < end && !needed; c++) needed = (references[c] ?? 0) > 0 || allocated.has(c);
      if (!needed) continue;
      blockClusters.set(range, allocate(1, first));
      changed = true;
    }
    let tableEntries = 0;
    for (const range of blockClusters.keys()) tableEntries = Math.max(tableEntries, range + 1);
    const neededTableClusters = Math.max(1, Math.ceil(tableEntries / entriesPerTableCluster));
    if (neededTableClusters > tableClusters) {
      // A larger table: give the smaller one back (nothing is written yet) and place it afresh.
      for (let i = 0; i < tableClusters; i++) allocated.delete(tableCluster + i);
      tableClusters = neededTableClusters;
      tableCluster = allocate(tableClusters, 0);
      changed = true;
    }
    if (!changed) return { blockClusters, tableCluster, tableClusters, allocated };
  }
}

/**
 * check()'s last pass, as qemu-img check's: the COPIED flags of the active L1 table and its L2
 * tables must say exactly "the stored refcount is 1". It runs after any refcount repair, so it
 * judges (and, when repairing, sets) the flags against the refcounts as they now are. A reference
 * past the end of the file has refcount 0 there: its COPIED flag is wrong too, as qemu-img says.
 */
import {
  ENTRY_HI_COPIED,
} from './constants.js';
import type { Qcow2Internals } from './internals.js';
import { entryCompressed, entryCopied, entryHostOffset, entryToBigInt } from './l2-entry.js';
import type { Qcow2CheckResult } from './types.js';


/** Counts (or, with repair, fixes) wrong COPIED flags; writes fixed tables back. */
export async function checkCopiedFlags(image: Qcow2Internals, result: Qcow2CheckResult, repair: boolean): Promise<void> {
  const cs = image.clusterSizeBytes;
  const verb = repair ? 'Repairing' : 'ERROR';
  let fixed = 0;
  const found = (message: string) => {
    result.messages.push(message);
    if (repair) {
      fixed++;
      result.corruptionsFixed++;
    } else {
      result.corruptions++;
    }
  };
  for (let i = 0; i < image.l1Offsets.length; i++) {
    const l2Offset = image.l1Offsets[i] ?? 0;
    if (l2Offset === 0) continue;
    const l2Refcount = await image.refcounts.storedRefcount(Math.floor(l2Offset / cs));
    const l1Copied = image.l1Copied[i] ?? false;
    if ((l2Refcount === 1) !== l1Copied) {
      found(`${verb} OFLAG_COPIED L2 cluster: l1_index=${i} l2_offset=${l2Offset.toString(16)} refcount=${l2Refcount}`);
      if (repair) {
        image.l1Copied[i] = l2Refcount === 1;
        image.l1Dirty = true;
      }
    }
    const table = await image.l2Cache.get(l2Offset);
    for (let slot = 0; slot < image.l2Entries; slot++) {
      const position = slot * image.l2EntryBytes;
      const hi = table.view.getUint32(position);
      const lo = table.view.getUint32(position + 4);
      // Compressed clusters are judged by the L2 walk (the flag must never be set there).
      if (entryCompressed(hi)) continue;
      const host = entryHostOffset(hi, lo);
      if (host === 0) continue;
      const refcount = await image.refcounts.storedRefcount(Math.floor(host / cs));
      if ((refcount === 1) === entryCopied(hi)) continue;
      found(`${verb} OFLAG_COPIED data cluster: l2_entry=${entryToBigInt(hi, lo).toString(16)} refcount=${refcount}`);
      if (repair) {
        table.view.setUint32(position, (hi ^ ENTRY_HI_COPIED) >>> 0);
        table.dirty = true;
      }
    }
  }
  if (fixed > 0) await image.writebackMetadata();
}

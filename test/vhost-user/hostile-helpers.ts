/**
 * Shared by the hostile-guest tests: how a hostile chain ended, and which guest bytes it changed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { BlkType, type ChainCompletion, type VhostUserFrontend } from './frontend.js';

/** Wait this long for something that may never happen (a dropped chain); never asserted as a timing. */
export const SETTLE_MS = 1500;

export type ChainOutcome =
  | { kind: 'completed'; writtenBytes: number }
  /** the chain never came back and the queue serves nothing after it (the device stopped it) */
  | { kind: 'stopped' }
  /** the chain never came back but later requests on the queue complete: a guest request lost */
  | { kind: 'dropped' }
  /** the back-end closed the connection */
  | { kind: 'closed' };

export async function race<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)));
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits for the chain; if it does not come back, probes the same queue with a valid read. */
export async function chainOutcome(fe: VhostUserFrontend, done: Promise<ChainCompletion>, queue: number, beforeProbe?: () => void): Promise<ChainOutcome> {
  const first = await race(
    done.then((c) => c).catch(() => 'rejected' as const),
    SETTLE_MS,
  );
  beforeProbe?.();
  if (first !== 'timeout' && first !== 'rejected') return { kind: 'completed', writtenBytes: first.writtenBytes };
  if (!fe.connected) return { kind: 'closed' };
  const probe = fe.io(BlkType.IN, 0, 512, { queue }).catch(() => 'rejected' as const);
  const p = await race(probe, SETTLE_MS);
  if (!fe.connected) return { kind: 'closed' };
  return p === 'timeout' || p === 'rejected' ? { kind: 'stopped' } : { kind: 'dropped' };
}

export interface MemorySnapshot {
  regions: Uint8Array[];
}

export function snapshot(fe: VhostUserFrontend): MemorySnapshot {
  const regions: Uint8Array[] = [];
  for (let i = 0; i < fe.memoryRegions.length; i++) regions.push(fe.regionBytes(i).slice());
  return { regions };
}

export interface ByteRange {
  guestAddr: bigint;
  lengthBytes: number;
}

/**
 * Guest ranges that changed since the snapshot, other than the used rings (the device's to write)
 * and the allowed ranges. Returns descriptions of offending ranges (empty when clean).
 */
export function strayWrites(fe: VhostUserFrontend, snap: MemorySnapshot, allowed: readonly ByteRange[]): string[] {
  const ok: ByteRange[] = [...allowed];
  for (let q = 0; q < fe.queueCount; q++) {
    const u = fe.queue(q).used;
    ok.push({ guestAddr: u.guestAddr, lengthBytes: u.bytes.length });
    // used_event, at the end of the avail ring: the front-end itself writes it while reaping
    const a = fe.queue(q).avail;
    ok.push({ guestAddr: a.guestAddr + BigInt(a.bytes.length - 2), lengthBytes: 2 });
  }
  // merge touching ranges, so a run of changed bytes over two adjacent buffers counts as inside
  ok.sort((x, y) => (x.guestAddr < y.guestAddr ? -1 : x.guestAddr > y.guestAddr ? 1 : 0));
  const merged: ByteRange[] = [];
  for (const r of ok) {
    const last = merged[merged.length - 1];
    if (last && r.guestAddr <= last.guestAddr + BigInt(last.lengthBytes)) {
      const end = r.guestAddr + BigInt(r.lengthBytes);
      const lastEnd = last.guestAddr + BigInt(last.lengthBytes);
      if (end > lastEnd) last.lengthBytes = Number(end - last.guestAddr);
    } else merged.push({ ...r });
  }
  const out: string[] = [];
  fe.memoryRegions.forEach((r, i) => {
    const now = fe.regionBytes(i);
    const before = snap.regions[i]!;
    let off = 0;
    while (off < now.length) {
      if (now[off] === before[off]) {
        off++;
        continue;
      }
      const start = off;
      while (off < now.length && now[off] !== before[off]) off++;
      const g = r.guestAddr + BigInt(start);
      const inside = merged.some((a) => g >= a.guestAddr && g + BigInt(off - start) <= a.guestAddr + BigInt(a.lengthBytes));
      if (!inside) out.push(`guest 0x${g.toString(16)} +${off - start}`);
    }
  });
  return out;
}

export { sleep };

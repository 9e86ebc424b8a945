/**
 * Copy-ups that run while the volume stays exported (flatten, snapshot delete): the copy goes a
 * window of guest space at a time, each under a short pause of the exports whose chains hold the
 * layers it writes, and the guests' requests run between windows (docs/daemon.md, "Live devices").
 *
 * Each window's plan is made at that moment, from the chain as it is then: a cluster a guest wrote
 * since the job started is allocated in the layer by now and is skipped, so a guest's data is never
 * overwritten with older data from below. Nothing a guest does makes an allocated cluster
 * unallocated again (a discard or write-zeroes over a backing file leaves a zero cluster), so a
 * window once copied stays copied. Only windows where the source has something to copy are
 * visited; where that is comes from the frozen source layers, read outside the pauses.
 *
 * The copy-up writes what the layer's chain already reads there, so a crash or a cancel between
 * (or inside) windows leaves a consistent volume: the intent is rolled back (headers as the
 * catalog says, leaks repaired) under a pause too, since an export holds the layers open.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Qcow2Image } from '../../formats/qcow2/index.js';
import type { ServiceContext } from './context.js';
import { forEachWindow, MAP_WINDOW_BYTES, type KindRange } from './extents.js';
import { runIntent } from './intents.js';
import type { JobContext } from './jobs.js';
import { openChain } from './layers.js';
import { withLiveChanges } from './live-registry.js';
import type { IntentRecord, LayerRecord } from './records.js';

/**
 * Guest bytes a window covers. A pause lasts about as long as copying a window's data (at most
 * this much, less where the layer already has its own) plus a flush and the reopen of the
 * exports' chains: 32 MiB is a fraction of a second on a disk doing 200 MB/s, short enough that a
 * guest sees a slow request rather than a hung one, and long enough that the per-window costs
 * (opening the chain, a flush, reopening the exports) stay a small part of the job.
 */
export const LIVE_COPY_WINDOW_BYTES = 32 * 1024 * 1024;

/**
 * When requests waited during a window's pause, the exports then run at least as long as that
 * pause took (within these bounds) before the next window, so a busy guest keeps about half its
 * throughput while the job runs; with no export, or idle ones, the job does not wait. Without this
 * turn a queue-depth-1 guest would get one request in per window: the next pause closes the gate
 * before its next request arrives.
 */
const GUEST_TURN_MIN_MS = 10;
const GUEST_TURN_MAX_MS = 200;

export interface WindowedCopy {
  /** Layers whose exports pause for each window (every chain holding a layer the copy writes or drops). */
  pauseLayerIds: readonly string[];
  /** Guest bytes past which the source has nothing to copy. */
  sizeBytes: number;
  /**
   * What the source may give over [start, end): its data (counted for progress) and zeroes to
   * write. Read outside any pause, so from frozen layers only; a superset of what a window copies.
   */
  candidates(start: number, end: number): Promise<KindRange[]>;
  /** Copies window [start, end) (the exports paused); resolves to the data bytes it copied. */
  copyWindow(start: number, end: number): Promise<number>;
}

/** Runs a windowed copy: progress (total = the candidates' data), cancellation between windows. */
export async function copyInWindows(svc: ServiceContext, ctx: JobContext, copy: WindowedCopy): Promise<{ windows: number }> {
  let total = 0;
  await forEachWindow(0, copy.sizeBytes, async (start, end) => {
    total += dataBytes(await copy.candidates(start, end), start, end);
  });
  ctx.setTotal(total);
  let windows = 0;
  let guestTurnMs = 0;
  await forEachWindow(0, copy.sizeBytes, async (mapStart, mapEnd) => {
    const candidates = await copy.candidates(mapStart, mapEnd);
    // Nothing exported: nothing to pause, so no reason to pay a flush and a reopen per 32 MiB.
    const windowBytes = isLive(svc, copy.pauseLayerIds) ? LIVE_COPY_WINDOW_BYTES : MAP_WINDOW_BYTES;
    for (const [start, end] of windowsOver(candidates, mapStart, mapEnd, windowBytes)) {
      if (guestTurnMs > 0) await sleep(guestTurnMs);
      ctx.throwIfCancelled();
      const waitedBefore = waitedRequests(svc, copy.pauseLayerIds);
      const pausedAt = performance.now();
      const copied = await withLiveChanges(svc, copy.pauseLayerIds, () => copy.copyWindow(start, end));
      const waited = waitedRequests(svc, copy.pauseLayerIds) > waitedBefore;
      guestTurnMs = waited ? Math.min(GUEST_TURN_MAX_MS, Math.max(GUEST_TURN_MIN_MS, performance.now() - pausedAt)) : 0;
      windows++;
      // Data the layer had of its own (a guest wrote it) needed no copy: it counts as done.
      ctx.addDone(Math.max(0, dataBytes(candidates, start, end) - copied));
    }
  });
  // And one more before the commit pauses them again.
  if (guestTurnMs > 0) await sleep(guestTurnMs);
  return { windows };
}

/** True when an export's chain holds any of these layers. */
function isLive(svc: ServiceContext, layerIds: readonly string[]): boolean {
  return [...svc.live.values()].some((live) => live.layerIds.some((id) => layerIds.includes(id)));
}

/** Requests that ever waited at the gates of the exports' chains holding any of these layers (the ones a window pauses). */
function waitedRequests(svc: ServiceContext, layerIds: readonly string[]): number {
  let sum = 0;
  for (const live of svc.live.values()) if (live.layerIds.some((id) => layerIds.includes(id))) sum += live.waitedRequests;
  return sum;
}

/** The windows (aligned to windowBytes, inside [start, end)) that some range touches, in order. */
export function windowsOver(ranges: readonly KindRange[], start: number, end: number, windowBytes: number = LIVE_COPY_WINDOW_BYTES): [number, number][] {
  const indexes = new Set<number>();
  for (const r of ranges) {
    const from = Math.max(start, r.offset);
    const to = Math.min(end, r.offset + r.length);
    if (from >= to) continue;
    for (let i = Math.floor(from / windowBytes); i * windowBytes < to; i++) indexes.add(i);
  }
  return [...indexes]
    .sort((a, b) => a - b)
    .map((i) => [Math.max(start, i * windowBytes), Math.min(end, (i + 1) * windowBytes)]);
}

function dataBytes(ranges: readonly KindRange[], start: number, end: number): number {
  let sum = 0;
  for (const r of ranges) if (r.kind === 'data') sum += Math.max(0, Math.min(end, r.offset + r.length) - Math.max(start, r.offset));
  return sum;
}

/**
 * runIntent (intents.ts) for work that pauses the exports itself, window by window: a failure is
 * settled (rolled back, or finished once committed) under a pause of those exports, since the
 * rollback rewrites headers and repairs leaks in layers an export holds open.
 */
export function runIntentLive(svc: ServiceContext, pauseLayerIds: readonly string[], intent: IntentRecord, work: () => Promise<void>): Promise<void> {
  return runIntent(svc, intent, work, { settleUnder: (settle) => withLiveChanges(svc, pauseLayerIds, settle) });
}

/** Runs fn on the chain opened (read-only unless writable), and closes it. */
export async function withChain<T>(svc: ServiceContext, chain: readonly LayerRecord[], fn: (image: Qcow2Image) => Promise<T>, options: { writable?: boolean } = {}): Promise<T> {
  const image = await openChain(svc.layerStore, chain, { writable: options.writable === true });
  try {
    return await fn(image);
  } finally {
    await image.close();
  }
}

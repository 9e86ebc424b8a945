/**
 * Digests of bodies hashed on the calling thread (hash-workers.ts sends a body here when it is
 * declared at most OFFLOAD_BYTES_MIN long: a worker round trip per small body measured slower;
 * unless the event loop waits for a CPU and another body is live: then the body goes to a worker),
 * with the MD5 of concurrent bodies in SIMD lanes (md5-lanes.ts) instead of one OpenSSL stream each.
 *
 * Why: at 16 concurrent 1 MiB PUTs, OpenSSL's MD5 (the ETag) was ~31% of the event loop's CPU
 * (`perf record`); lanes hash 8 bodies for about the price of 2.5. A body joins the lanes when
 * its first bytes come while another MD5 body of lane size is live here; alone it keeps OpenSSL
 * (one lane alone runs at ~55% of OpenSSL's speed), so a client sending one body at a time pays nothing.
 *
 * A lane body copies its bytes into staging blocks of MD5_LANE_BYTES_MAX (what a lane takes in one
 * call; the caller's pieces may be reused once update returns). A pass hashes the oldest full
 * block of up to 8 bodies side by side; it runs inside update as soon as 8 bodies (or every lane
 * body) have a full block, or the lane bodies hold STAGED_BLOCKS_MAX full blocks in all, and when a
 * body's digests are asked for (its blocks, with whichever others are ready). Nothing waits on a
 * timer: a pass costs the caller's thread what it saves, in the same call.
 */
import { createHash, type Hash } from 'node:crypto';
import { LaneMd5, Md5Lanes, MD5_BLOCK_BYTES, MD5_LANE_BYTES_MAX, MD5_LANES_MAX } from './md5-lanes.js';
import { StorageError } from '../core/errors.js';
import type { DeferredAlgorithm, DeferredDigests } from './hash-workers.js';

/** A staging block: one lane's bytes for one pass. */
const STAGING_BLOCK_BYTES = MD5_LANE_BYTES_MAX;
/**
 * Full blocks all lane bodies together may hold before a pass runs anyway (8 MiB). A body's bytes
 * arrive in bursts (libuv reads a socket up to 32 times a turn), so passes that ran when one body
 * held a few blocks took ~2 lanes and lost to OpenSSL; held until its end or until 8 bodies have
 * a block, they fill the lanes. A body's MD5 is needed only once its chunks are stored (the ETag
 * is committed last), so its blocks wait at no cost to it.
 */
const STAGED_BLOCKS_MAX = 128;
/** Bodies declared shorter than this keep OpenSSL: a few blocks would mostly wait for company. */
export const LANE_BODY_BYTES_MIN = 4 * STAGING_BLOCK_BYTES;
/** Spare staging blocks kept between bodies: as many as may be staged at once. */
const SPARE_BLOCKS_MAX = STAGED_BLOCKS_MAX;

/** The compiled lanes of this thread; null where WebAssembly SIMD does not compile (MD5 stays on OpenSSL). */
let engine: Md5Lanes | null | undefined;
function laneEngine(): Md5Lanes | null {
  if (engine === undefined) {
    try {
      engine = new Md5Lanes();
    } catch {
      engine = null;
    }
  }
  return engine;
}

const spareBlocks: Uint8Array[] = [];
function takeBlock(): Uint8Array {
  return spareBlocks.pop() ?? new Uint8Array(STAGING_BLOCK_BYTES);
}
function giveBackBlock(block: Uint8Array): void {
  if (spareBlocks.length < SPARE_BLOCKS_MAX) spareBlocks.push(block);
}

/** A body whose MD5 runs in lanes. */
class LaneBody {
  readonly md5 = new LaneMd5();
  /** Full staging blocks not yet hashed, oldest first. */
  readonly full: Uint8Array[] = [];
  current: Uint8Array | undefined;
  currentBytes = 0;
}

/** Live lane bodies (a body whose blocks are all hashed waits here for its next block). */
let laneBodyCount = 0;
/**
 * Lane bodies holding a full block, oldest-ready first: a pass takes from the front and puts a
 * body that still holds blocks at the back (round-robin, and O(lanes) a pass however many bodies).
 */
const readyBodies = new Set<LaneBody>();
/** Full blocks the lane bodies hold, in all. */
let stagedBlocks = 0;
/** Live bodies here of lane size whose MD5 is computed (lanes or OpenSSL) and that have had bytes: a body whose first bytes find company joins the lanes. */
let liveMd5Bodies = 0;
/** Bodies whose MD5 ran in lanes here so far, and passes run (tests see that concurrent bodies shared lanes). */
const laneCounts = { bodies: 0, passes: 0, lanesInPasses: 0 };
export function laneCountsForTests(): Readonly<typeof laneCounts> {
  return { ...laneCounts };
}

/** Hashes the oldest full block of `first` (when it has one) and of up to 7 more ready bodies, round-robin. */
function runPass(lanes: Md5Lanes, first: LaneBody | undefined): void {
  const ready: LaneBody[] = first !== undefined && first.full.length > 0 ? [first] : [];
  for (const body of readyBodies) {
    if (ready.length >= MD5_LANES_MAX) break;
    if (body !== first) ready.push(body);
  }
  if (ready.length === 0) return;
  lanes.hash(ready.map((body) => ({ md5: body.md5, pieces: [body.full[0]!] })));
  for (const body of ready) {
    giveBackBlock(body.full.shift()!);
    readyBodies.delete(body);
    if (body.full.length > 0) readyBodies.add(body);
  }
  stagedBlocks -= ready.length;
  laneCounts.passes++;
  laneCounts.lanesInPasses += ready.length;
}

class LaneDigests implements DeferredDigests {
  /** One per algorithm; MD5's stays undefined while it runs in a lane, or until the first bytes decide where it runs. */
  private readonly hashes: (Hash | undefined)[];
  private readonly md5At: number;
  private body: LaneBody | undefined;
  /** Fed its first bytes; a lane-sized one is then counted in liveMd5Bodies until it ends (a body never fed is never counted). */
  private started = false;
  private done = false;

  constructor(
    algorithms: readonly DeferredAlgorithm[],
    private readonly laneSized: boolean,
  ) {
    this.md5At = algorithms.indexOf('md5');
    this.hashes = algorithms.map((algorithm, i) => (laneSized && i === this.md5At ? undefined : createHash(algorithm)));
  }

  update(piece: Uint8Array): void {
    if (this.done) return;
    if (!this.started) this.start();
    for (const hash of this.hashes) hash?.update(piece);
    const body = this.body;
    if (body === undefined) return;
    for (let at = 0; at < piece.length; ) {
      body.current ??= takeBlock();
      const take = Math.min(piece.length - at, STAGING_BLOCK_BYTES - body.currentBytes);
      body.current.set(piece.subarray(at, at + take), body.currentBytes);
      body.currentBytes += take;
      at += take;
      if (body.currentBytes < STAGING_BLOCK_BYTES) continue;
      body.full.push(body.current);
      readyBodies.add(body); // no-op when it is queued already
      stagedBlocks++;
      body.current = undefined;
      body.currentBytes = 0;
      const ready = readyBodies.size;
      if (ready >= MD5_LANES_MAX || ready === laneBodyCount || stagedBlocks > STAGED_BLOCKS_MAX) runPass(laneEngine()!, undefined);
    }
  }

  /** At the first bytes: a lane when another lane-sized MD5 body is live here, else OpenSSL. */
  private start(): void {
    this.started = true;
    if (!this.laneSized) return;
    const inLane = liveMd5Bodies > 0 && laneEngine() !== null;
    liveMd5Bodies++;
    if (!inLane) {
      this.hashes[this.md5At] = createHash('md5');
      return;
    }
    this.body = new LaneBody();
    laneBodyCount++;
    laneCounts.bodies++;
  }

  whenDrained(): undefined {
    return undefined;
  }

  async digests(): Promise<Buffer[]> {
    if (this.done) throw new StorageError('INVALID_ARGUMENT', 'the digests of a body are asked for once');
    // An empty body (never fed) has its MD5 from OpenSSL.
    if (this.md5At >= 0 && this.hashes[this.md5At] === undefined && this.body === undefined) this.hashes[this.md5At] = createHash('md5');
    const md5 = this.body === undefined ? undefined : this.finishLane(this.body);
    this.end();
    return this.hashes.map((hash) => (hash === undefined ? Buffer.from(md5!) : hash.digest()));
  }

  abandon(): void {
    if (this.done) return;
    if (this.body !== undefined) {
      for (const block of this.body.full) giveBackBlock(block);
      stagedBlocks -= this.body.full.length;
      if (this.body.current !== undefined) giveBackBlock(this.body.current);
    }
    this.end();
  }

  /** Runs passes until the body's full blocks are hashed (others ride along), then its last bytes alone. */
  private finishLane(body: LaneBody): Uint8Array {
    const lanes = laneEngine()!;
    while (body.full.length > 0) runPass(lanes, body);
    const wholeBytes = body.currentBytes - (body.currentBytes % MD5_BLOCK_BYTES);
    const current = body.current ?? new Uint8Array(0);
    if (wholeBytes > 0) lanes.hash([{ md5: body.md5, pieces: [current.subarray(0, wholeBytes)] }]);
    const digest = lanes.finish(body.md5, current.subarray(wholeBytes, body.currentBytes));
    if (body.current !== undefined) giveBackBlock(body.current);
    return digest;
  }

  private end(): void {
    this.done = true;
    if (this.started && this.laneSized) liveMd5Bodies--;
    if (this.body === undefined) return;
    readyBodies.delete(this.body);
    laneBodyCount--;
    this.body = undefined;
  }
}

/**
 * Running digests computed on this thread: a body of at least LANE_BODY_BYTES_MIN (declared) whose
 * MD5 is asked for has it in a lane when another such body is live here, else on OpenSSL.
 */
export function inProcessDigests(algorithms: readonly DeferredAlgorithm[], declaredBytes: number | undefined): DeferredDigests {
  return new LaneDigests(algorithms, algorithms.includes('md5') && declaredBytes !== undefined && declaredBytes >= LANE_BODY_BYTES_MIN);
}

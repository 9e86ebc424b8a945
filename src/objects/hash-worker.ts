/**
 * The body of a hashing worker thread (hash-workers.ts starts it): running MD5 / SHA-1 / SHA-256
 * digests of request bodies, one session per body, fed batches of bytes in order. It acknowledges
 * each batch once it has read it (so the sender can bound what is queued and fill the batch's
 * shared memory again) and answers a finish with the digests. A large body's chunks come instead
 * as the sender's own memory, moved here and moved back once read ('owned'): the bytes the
 * sender cut into chunks are hashed where they lie, not copied into a batch first.
 *
 * MD5, the ETag of every PUT, is the costly one. A body that starts while another is being hashed
 * here has its MD5 run in a lane of md5-lanes.ts: bytes queue per session, and each pass hashes up
 * to 8 sessions' next bytes side by side (2.2x OpenSSL's throughput with 4 lanes, 3.4x with 8). A
 * body that starts alone keeps OpenSSL (one lane alone runs at ~55% of its speed), so a client
 * sending one body at a time pays nothing. Bodies arrive a batch at a time, each at its own
 * moment: hashing each batch as it came ran 2.3 lanes a pass at 16 concurrent 256 MiB PUTs. So a
 * pass waits for company (passDue): it runs once all 8 lanes have bytes, or every lane session
 * has, or a session is finishing or holds what its sender may queue before it waits, or
 * PASS_WAIT_MS_MAX after the first bytes waited.
 * Only node: imports and md5-lanes.ts (loaded by path, .ts from src/ under type stripping, .js from
 * dist/), so the same file runs from src/ (tests) and dist/.
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort, workerData } from 'node:worker_threads';

/** What the pool tells a worker at its start. */
export interface HashWorkerSettings {
  /** Bytes a session may have sent and not had acknowledged before its sender waits (HASH_QUEUED_BYTES_MAX). */
  readonly senderQueuedBytesMax: number;
}

/** What the main thread sends: bytes for a session, its end, or its abandonment. */
export type HashWorkerRequest =
  | {
      readonly kind: 'update';
      readonly session: number;
      readonly algorithms: readonly string[];
      /** The batch's slab of shared memory, by number; sent with the slab's first batch to this worker. */
      readonly slab: number;
      readonly memory?: SharedArrayBuffer;
      readonly offsetBytes: number;
      readonly lengthBytes: number;
    }
  | {
      readonly kind: 'owned';
      readonly session: number;
      readonly algorithms: readonly string[];
      /** Views of memory moved here (each of its own), or counts of zero bytes; sent back in a 'returned' once read. */
      readonly pieces: readonly (Uint8Array | number)[];
    }
  | { readonly kind: 'finish'; readonly session: number; readonly algorithms: readonly string[] }
  | { readonly kind: 'abandon'; readonly session: number };

/** What the worker answers. */
export type HashWorkerReply =
  | { readonly kind: 'ack'; readonly session: number }
  | { readonly kind: 'returned'; readonly session: number; readonly pieces: readonly (Uint8Array | number)[] }
  | { readonly kind: 'digests'; readonly session: number; readonly digests: readonly Uint8Array[]; readonly md5InLane: boolean };

const lanesModule = (await import(new URL(`./md5-lanes.${import.meta.url.endsWith('.ts') ? 'ts' : 'js'}`, import.meta.url).href)) as typeof import('./md5-lanes.js');
const { MD5_BLOCK_BYTES, MD5_LANE_BYTES_MAX, MD5_LANES_MAX } = lanesModule;
/**
 * The lanes, where this machine compiles WebAssembly SIMD (V8 needs SSE4.1 on x86-64); where it
 * cannot, every body's MD5 stays on OpenSSL rather than every large PUT failing with the worker.
 */
const lanes = ((): InstanceType<typeof lanesModule.Md5Lanes> | undefined => {
  try {
    return new lanesModule.Md5Lanes();
  } catch {
    return undefined;
  }
})();
const settings = workerData as HashWorkerSettings;
/**
 * The longest a lane session's bytes wait for others before a pass runs anyway. Waiting costs the
 * sender nothing while it has room to queue more (senderQueuedBytesMax): at 16 concurrent PUTs a
 * body's 2 MiB batch comes every ~80 ms, about one batch of some body every 5 ms; a 5 ms wait ran
 * 2.6 lanes a pass, 50 ms 3.7 (4.2-4.5 once passes also waited for all 8 lanes: passDue).
 */
const PASS_WAIT_MS_MAX = 50;

/** Bytes of a session's body waiting for its MD5 lane; `acknowledge`: on the last piece of a batch or an owned message, called once it is read. */
interface QueuedPiece {
  data: Uint8Array;
  readonly acknowledge: (() => void) | undefined;
}

/** Zero bytes for the counts in owned messages (a zero chunk is not sent as bytes); only ever read. */
const ZERO_BYTES = new Uint8Array(64 * 1024);

/** `lengthBytes` zero bytes as views of ZERO_BYTES. */
function zeroPieces(lengthBytes: number): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  for (let left = lengthBytes; left > 0; left -= ZERO_BYTES.length) pieces.push(ZERO_BYTES.subarray(0, Math.min(left, ZERO_BYTES.length)));
  return pieces;
}

/** Sends an owned message's memory back to the sender (read: it may be used again). */
function giveBack(session: number, pieces: readonly (Uint8Array | number)[]): void {
  const transfer = pieces.filter((piece) => typeof piece !== 'number').map((piece) => piece.buffer as ArrayBuffer);
  parentPort!.postMessage({ kind: 'returned', session, pieces } satisfies HashWorkerReply, transfer);
}

interface Session {
  readonly id: number;
  readonly algorithms: readonly string[];
  /** One per algorithm; undefined for MD5 when it runs in a lane. */
  readonly hashes: readonly (Hash | undefined)[];
  /** The lane's MD5, when the session has one. */
  readonly lane: InstanceType<typeof lanesModule.LaneMd5> | undefined;
  readonly queued: QueuedPiece[];
  queuedBytes: number;
  finishing: boolean;
}

const sessions = new Map<number, Session>();
/** Sessions whose MD5 runs in a lane, in the order they started (passes take them round-robin). */
const laneSessions: Session[] = [];
let nextLaneSession = 0;
/** The sender's slabs of shared memory (kept for the thread's life, as the sender keeps them). */
const slabs = new Map<number, SharedArrayBuffer>();
let passScheduled = false;
/** A body is finishing: the next pass hashes every session's whole blocks. */
let forcedPass = false;
let passTimer: NodeJS.Timeout | undefined;

function reply(message: HashWorkerReply): void {
  parentPort!.postMessage(message);
}

function sessionOf(id: number, algorithms: readonly string[]): Session {
  let session = sessions.get(id);
  if (session === undefined) {
    // Lanes only pay with company: a body that starts while another is live here.
    const inLane = lanes !== undefined && sessions.size > 0 && algorithms.includes('md5');
    session = {
      id,
      algorithms,
      hashes: algorithms.map((algorithm) => (inLane && algorithm === 'md5' ? undefined : createHash(algorithm))),
      lane: inLane ? new lanesModule.LaneMd5() : undefined,
      queued: [],
      queuedBytes: 0,
      finishing: false,
    };
    sessions.set(id, session);
    if (inLane) laneSessions.push(session);
  }
  return session;
}

/** The sessions the next pass takes: those with a whole block queued, at most MD5_LANES_MAX, round-robin. */
function readySessions(): Session[] {
  const ready: Session[] = [];
  for (let i = 0; i < laneSessions.length && ready.length < MD5_LANES_MAX; i++) {
    const session = laneSessions[(nextLaneSession + i) % laneSessions.length]!;
    if (session.queuedBytes >= MD5_BLOCK_BYTES) ready.push(session);
  }
  return ready;
}

/** Whether a pass of `ready` fills its lanes, or waiting longer could hold up a sender. */
function passDue(ready: readonly Session[]): boolean {
  if (ready.length === 0) return false;
  if (ready.length >= MD5_LANES_MAX || ready.length === laneSessions.length) return true;
  // A session holding its sender's bound: one more batch and the sender waits.
  return laneSessions.some((session) => session.queuedBytes >= settings.senderQueuedBytesMax);
}

/**
 * Runs passes once the messages now queued for this thread are taken in: while they are due, or
 * (`forced`: a body is finishing) until every session's whole blocks are hashed. Bytes left
 * waiting get a pass at the latest PASS_WAIT_MS_MAX later.
 */
function schedulePass(forced: boolean): void {
  forcedPass ||= forced;
  if (passScheduled) return;
  if (forcedPass || passDue(readySessions())) {
    passScheduled = true;
    setImmediate(runPasses);
  } else {
    passTimer ??= setTimeout(() => {
      passTimer = undefined;
      schedulePass(true);
    }, PASS_WAIT_MS_MAX);
  }
}

/** Takes `lengthBytes` from the head of a session's queue (views, read before the acknowledgements are sent); returns them and the acknowledgements owed. */
function takeQueued(session: Session, lengthBytes: number): { pieces: Uint8Array[]; acknowledgements: (() => void)[] } {
  const pieces: Uint8Array[] = [];
  const acknowledgements: (() => void)[] = [];
  let left = lengthBytes;
  while (left > 0) {
    const head = session.queued[0]!;
    if (head.data.length <= left) {
      pieces.push(head.data);
      left -= head.data.length;
      session.queued.shift();
      if (head.acknowledge !== undefined) acknowledgements.push(head.acknowledge);
    } else {
      pieces.push(head.data.subarray(0, left));
      head.data = head.data.subarray(left);
      left = 0;
    }
  }
  session.queuedBytes -= lengthBytes;
  return { pieces, acknowledgements };
}

function acknowledge(acknowledgements: readonly (() => void)[]): void {
  for (const acknowledgement of acknowledgements) acknowledgement();
}

/** Lane passes (see schedulePass), then short tails kept and finished sessions answered. */
function runPasses(): void {
  const forced = forcedPass;
  passScheduled = false;
  forcedPass = false;
  for (;;) {
    const ready = readySessions();
    if (ready.length === 0 || (!forced && !passDue(ready))) break;
    nextLaneSession = (nextLaneSession + 1) % laneSessions.length;
    let lengthBytes = MD5_LANE_BYTES_MAX;
    for (const session of ready) lengthBytes = Math.min(lengthBytes, session.queuedBytes - (session.queuedBytes % MD5_BLOCK_BYTES));
    const taken = ready.map((session) => takeQueued(session, lengthBytes));
    lanes!.hash(ready.map((session, i) => ({ md5: session.lane!, pieces: taken[i]!.pieces })));
    for (const { acknowledgements } of taken) acknowledge(acknowledgements);
  }
  let waiting = false;
  for (const session of [...laneSessions]) {
    if (session.queuedBytes >= MD5_BLOCK_BYTES) {
      waiting = true;
      continue;
    }
    // What is left is short of a block: copied out, so its batches can be acknowledged and filled again.
    if (session.queued.some((piece) => piece.acknowledge !== undefined)) {
      const { pieces, acknowledgements } = takeQueued(session, session.queuedBytes);
      const tail = Buffer.concat(pieces);
      session.queued.push({ data: tail, acknowledge: undefined });
      session.queuedBytes = tail.length;
      acknowledge(acknowledgements);
    }
    if (session.finishing) answer(session, Buffer.concat(session.queued.map((piece) => piece.data)));
  }
  if (waiting) schedulePass(false);
}

/** Sends the session's digests and forgets it. */
function answer(session: Session, md5Tail: Uint8Array | undefined): void {
  const digests = session.algorithms.map((_, i) => {
    const hash = session.hashes[i];
    return hash === undefined ? lanes!.finish(session.lane!, md5Tail!) : new Uint8Array(hash.digest());
  });
  forget(session);
  reply({ kind: 'digests', session: session.id, digests, md5InLane: session.lane !== undefined });
}

function forget(session: Session): void {
  sessions.delete(session.id);
  const at = laneSessions.indexOf(session);
  if (at >= 0) laneSessions.splice(at, 1);
}

parentPort?.on('message', (request: HashWorkerRequest) => {
  switch (request.kind) {
    case 'update': {
      if (request.memory !== undefined) slabs.set(request.slab, request.memory);
      const data = new Uint8Array(slabs.get(request.slab)!, request.offsetBytes, request.lengthBytes);
      const session = sessionOf(request.session, request.algorithms);
      for (const hash of session.hashes) hash?.update(data);
      if (session.lane === undefined) {
        // The batch (shared memory) may be filled again once acknowledged.
        reply({ kind: 'ack', session: request.session });
      } else {
        session.queued.push({ data, acknowledge: () => reply({ kind: 'ack', session: request.session }) });
        session.queuedBytes += data.length;
        schedulePass(false);
      }
      break;
    }
    case 'owned': {
      const session = sessionOf(request.session, request.algorithms);
      const data = request.pieces.flatMap((piece) => (typeof piece === 'number' ? zeroPieces(piece) : [piece]));
      // Every digest but a lane's MD5 now (as for a batch); the lane's MD5 in a pass, the memory sent back after it.
      for (const hash of session.hashes) for (const piece of data) hash?.update(piece);
      if (session.lane === undefined || data.length === 0) {
        giveBack(request.session, request.pieces);
        break;
      }
      data.forEach((piece, i) => session.queued.push({ data: piece, acknowledge: i === data.length - 1 ? () => giveBack(request.session, request.pieces) : undefined }));
      session.queuedBytes += data.reduce((sum, piece) => sum + piece.length, 0);
      schedulePass(false);
      break;
    }
    case 'finish': {
      const session = sessionOf(request.session, request.algorithms);
      if (session.lane === undefined) answer(session, undefined);
      else {
        session.finishing = true;
        schedulePass(true);
      }
      break;
    }
    case 'abandon': {
      const session = sessions.get(request.session);
      if (session === undefined) break;
      // Batches still queued are owed their acknowledgements (and owned memory its return): the sender keeps them until then.
      acknowledge(session.queued.flatMap((piece) => (piece.acknowledge === undefined ? [] : [piece.acknowledge])));
      forget(session);
      break;
    }
  }
});

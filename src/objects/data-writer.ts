/**
 * Writing a body: a stream of pieces of any size is cut into chunks of OBJECT_CHUNK_SIZE_BYTES from
 * offset 0; all-zero chunks are left out (the manifest marks them zero); the others go to the
 * pool's ChunkRepository in journalled steps of CHUNKS_PER_STEP chunks, STEPS_IN_FLIGHT_MAX of
 * them at once, while MD5 and the requested checksum are computed on the fly (MD5, SHA-1 and
 * SHA-256 on a hashing worker thread: hash-workers.ts; the CRCs here). Memory is bounded
 * by (STEPS_IN_FLIGHT_MAX + 1) steps of chunks (~20 MiB), whatever the body's size.
 *
 * Each chunk is hashed once (the repository's hashChunk names it for the manifest, the journal
 * and the repository call alike), and its buffer comes from a small free list and goes back to
 * it once its step has settled (a fresh 64 KiB buffer per chunk kept the GC busy). A body declared
 * over OFFLOAD_BYTES_MIN (or a smaller one whose digests deferredDigests sent to a worker: one that
 * began beside another object write) has each step's chunks named by the repository's hashOwnedChunks (BLAKE3
 * pools: on the dedup layer's hashing worker, beside this thread), then appended and added in step
 * order; its MD5 (and SHA) are computed from the same chunk buffers, moved to the digests' worker
 * a step at a time before they go to be named (DeferredDigests.updateOwned), so that each byte is
 * copied once on this thread (into its chunk), not twice.
 *
 * The caller owns the PutJournal: on any failure it abandons the journal (every reference given
 * back), after waiting here for the steps in flight to settle.
 */
import { assert, StorageError } from '../core/errors.js';
import type { ChunkManifest } from '../store/chunked/manifest.js';
import { isAllZero } from '../store/zero-bytes.js';
import { runningChecksum, type ChecksumAlgorithm, type RunningChecksum } from './checksums.js';
import { deferredDigests, OFFLOAD_BYTES_MIN, type DeferredAlgorithm, type DeferredDigests } from './hash-workers.js';
import { OBJECT_CHUNK_SIZE_BYTES } from './context.js';
import { ObjectError } from './errors.js';
import { AppendingManifestBuilder } from './manifest-builder.js';
import type { PutJournal } from './put-journal.js';
import type { HashedChunk } from '../store/dedup/repository.js';

/** Chunks per journalled repository call (4 MiB at 64 KiB). */
export const CHUNKS_PER_STEP = 64;
/** Repository calls a body keeps in flight while more of it arrives. */
export const STEPS_IN_FLIGHT_MAX = 4;

/**
 * Chunk buffers kept for reuse between bodies: 16 MiB at 64 KiB, what 16 concurrent 1 MiB PUTs
 * hold (one step's 4 MiB left those PUTs a new zero-filled buffer per chunk: 2.5% of the main
 * thread in a profile of 1 MiB PUTs at c16, and external memory the GC had to chase).
 */
const SPARE_CHUNK_BUFFERS_MAX = 4 * CHUNKS_PER_STEP;
const spareChunkBuffers: Uint8Array[] = [];

function takeChunkBuffer(): Uint8Array {
  // Not zero-filled: a chunk is only ever read up to the bytes written into it.
  return spareChunkBuffers.pop() ?? new Uint8Array(Buffer.allocUnsafeSlow(OBJECT_CHUNK_SIZE_BYTES).buffer);
}

/** Gives back chunk buffers nothing reads any more (whole-chunk buffers only, not views of them). */
function giveBackChunkBuffers(buffers: readonly Uint8Array[]): void {
  for (const buffer of buffers) {
    if (spareChunkBuffers.length >= SPARE_CHUNK_BUFFERS_MAX) return;
    if (buffer.byteOffset === 0 && buffer.buffer.byteLength === OBJECT_CHUNK_SIZE_BYTES) spareChunkBuffers.push(new Uint8Array(buffer.buffer));
  }
}

export interface WriteBodyOptions {
  /** The size the client declared (Content-Length or x-amz-decoded-content-length): IncompleteBody when it differs. */
  readonly expectedSizeBytes?: number;
  /** The most bytes accepted (EntityTooLarge past it). */
  readonly sizeBytesMax: number;
  readonly checksumAlgorithm?: ChecksumAlgorithm;
  /**
   * Compute the body's SHA-256 too (WrittenBody.sha256: a signed payload's x-amz-content-sha256),
   * with its MD5 in one hashing session: one copy of the bytes for a worker and one message per
   * batch, not two.
   */
  readonly sha256?: boolean;
  readonly signal?: AbortSignal;
  /**
   * Appends the body's chunks to this builder (which must hold whole chunks) instead of a new one;
   * the result's manifest is then the builder's, this body after what it held.
   */
  readonly appendTo?: AppendingManifestBuilder;
  /**
   * A body of at most this many bytes (less than one chunk) is returned as its bytes, with no
   * manifest and no reference added (a small object kept in the catalog: manifest-storage.ts).
   */
  readonly inlineBytesMax?: number;
  /**
   * A body whose chunks make one step at most comes back with that step held (WrittenBody.heldStep)
   * instead of added: the caller adds its references in the transaction that installs the version
   * (one catalog commit for a put of up to CHUNKS_PER_STEP chunks, no journal record).
   */
  readonly holdSingleStep?: boolean;
}

/** A body's only step, not added yet (WriteBodyOptions.holdSingleStep). */
export interface HeldStep {
  readonly chunks: readonly HashedChunk[];
  /** Gives the chunks' buffers back once nothing reads them (after the call that adds them settled). */
  release(): void;
}

export interface WrittenBody {
  readonly manifest: ChunkManifest;
  readonly sizeBytes: number;
  readonly md5: Buffer;
  /** base64, when an algorithm was asked for. */
  readonly checksum?: string;
  /** The body's SHA-256, when WriteBodyOptions.sha256 asked for it. */
  readonly sha256?: Buffer;
  /** The body's one step, held for the caller to add (WriteBodyOptions.holdSingleStep). */
  readonly heldStep?: HeldStep;
}

/** A body small enough (WriteBodyOptions.inlineBytesMax) to be kept as its bytes. */
export interface WrittenSmallBody extends Omit<WrittenBody, 'manifest'> {
  readonly inlineBytes: Uint8Array;
}

/** A body's digests: those node:crypto has in one session (a hashing worker's or lanes here), the CRCs here. */
interface BodyDigests {
  readonly offloaded: DeferredDigests;
  /** What `offloaded` computes, in order: md5 first, then sha1 and/or sha256. */
  readonly algorithms: readonly DeferredAlgorithm[];
  /** The checksum that is a CRC, computed here. */
  readonly crc: RunningChecksum | undefined;
  readonly checksumAlgorithm: ChecksumAlgorithm | undefined;
  readonly sha256: boolean;
}

function bodyDigests(options: Pick<WriteBodyOptions, 'checksumAlgorithm' | 'sha256' | 'expectedSizeBytes'>): BodyDigests {
  const algorithm = options.checksumAlgorithm;
  const algorithms: DeferredAlgorithm[] = ['md5'];
  if (algorithm === 'SHA1') algorithms.push('sha1');
  // x-amz-checksum-sha256 and a signed payload's SHA-256 are the same digest: computed once.
  if (algorithm === 'SHA256' || options.sha256 === true) algorithms.push('sha256');
  const crc = algorithm === undefined || algorithm === 'SHA1' || algorithm === 'SHA256' ? undefined : runningChecksum(algorithm);
  return { offloaded: deferredDigests(algorithms, options.expectedSizeBytes), algorithms, crc, checksumAlgorithm: algorithm, sha256: options.sha256 === true };
}

async function digestsOf(digests: BodyDigests): Promise<{ md5: Buffer; checksum?: string; sha256?: Buffer }> {
  const values = await digests.offloaded.digests();
  const of = (name: DeferredAlgorithm): Buffer | undefined => values[digests.algorithms.indexOf(name)];
  const algorithm = digests.checksumAlgorithm;
  const checksum = algorithm === 'SHA1' ? of('sha1') : algorithm === 'SHA256' ? of('sha256') : digests.crc?.digest();
  const sha256 = digests.sha256 ? of('sha256') : undefined;
  return { md5: of('md5')!, ...(checksum === undefined ? {} : { checksum: checksum.toString('base64') }), ...(sha256 === undefined ? {} : { sha256 }) };
}

/** Writes a body into the pool (through the journal) and gives its manifest. */
export async function writeBody(journal: PutJournal, body: AsyncIterable<Uint8Array>, options: Omit<WriteBodyOptions, 'inlineBytesMax'>): Promise<WrittenBody> {
  const written = await writeBodyOrKeepSmall(journal, body, options);
  assert(!('inlineBytes' in written), 'a body is kept as bytes only when asked to');
  return written;
}

/** writeBody, except that a body of at most `options.inlineBytesMax` bytes is returned as its bytes, nothing stored. */
export async function writeBodyOrKeepSmall(journal: PutJournal, body: AsyncIterable<Uint8Array>, options: WriteBodyOptions): Promise<WrittenBody | WrittenSmallBody> {
  const repository = journal.repository;
  const builder = options.appendTo ?? new AppendingManifestBuilder(OBJECT_CHUNK_SIZE_BYTES, repository.hash(new Uint8Array(0)).length / 2);
  const heldBytes = builder.fileSizeBytes;
  const digests = bodyDigests(options);
  const { offloaded, crc } = digests;
  const inFlight: Promise<void>[] = [];
  // A large body's chunks are named a step at a time off this thread (hashStepOffThread), and so
  // are a smaller body's whose digests went to a worker (deferredDigests: it began beside another
  // object write, and naming its chunks here would keep them on the busy event loop); the
  // step's chunks, zero chunks as their lengths, wait in `unnamed` meanwhile.
  const declaredBytes = options.expectedSizeBytes;
  const offThread = repository.hashOwnedChunks !== undefined && declaredBytes !== undefined && (declaredBytes > OFFLOAD_BYTES_MIN || offloaded.updateOwned !== undefined);
  // ...and its digests are computed from those chunks (zero chunks as their lengths), a step at a time.
  const digestsFromChunks = offThread && offloaded.updateOwned !== undefined;
  let unnamed: (Uint8Array | number)[] = [];
  let stepsBegun: Promise<unknown> = Promise.resolve();
  let chunks: HashedChunk[] = [];
  let unnamedChunks = 0;
  let stepsDispatched = 0;
  let current = takeChunkBuffer();
  let filled = 0;
  let sizeBytes = 0;

  /** Adds a step's chunks (named) through the journal; settles when its call did, its buffers given back. */
  const addStep = (sent: readonly HashedChunk[]): Promise<void> =>
    journal.addChunks(sent, options.signal).finally(() => giveBackChunkBuffers(sent.map((chunk) => chunk.data)));
  /**
   * The waiting chunks named on the repository's worker; then, in step order, appended to the
   * manifest and handed to `begin` (a later step's begin waits for this one's). Resolves to what
   * begin gave.
   */
  const nameWaiting = <T>(begin: (tokens: HashedChunk[]) => T): Promise<T> => {
    const waiting = unnamed;
    unnamed = [];
    unnamedChunks = 0;
    // The chunks' memory goes to the digests' worker and comes back (new views) before it goes to be named.
    const digested = digestsFromChunks ? offloaded.updateOwned!(waiting) : Promise.resolve(waiting);
    const named = digested.then((returned) => repository.hashOwnedChunks!(returned.filter((entry) => typeof entry !== 'number')));
    const begun = Promise.all([named, stepsBegun]).then(([tokens]) => {
      let next = 0;
      for (const entry of waiting) {
        // A chunk's own view was detached when its memory went to the worker: its token holds it now.
        const token = typeof entry === 'number' ? undefined : tokens[next++]!;
        builder.append(token?.hash, token?.data.length ?? (entry as number));
      }
      return begin(tokens);
    });
    // A step that failed to begin fails every later one (nothing after a gap reaches the manifest or the journal).
    stepsBegun = begun;
    begun.catch(() => undefined);
    return begun;
  };
  /** The waiting chunks named, then added. Resolves to the step's call (wrapped: not awaited here) once it began. */
  const hashStepOffThread = (): Promise<void> =>
    nameWaiting((tokens) => ({ added: tokens.length > 0 ? addStep(tokens) : Promise.resolve() })).then((step) => step.added);
  const dispatch = async (): Promise<void> => {
    stepsDispatched++;
    let step: Promise<void> | undefined;
    if (unnamed.length > 0) step = hashStepOffThread();
    else if (chunks.length > 0) step = addStep(chunks);
    chunks = [];
    if (step !== undefined) {
      step.catch(() => undefined); // observed below, or by the caller's wait on failure
      inFlight.push(step);
    }
    while (inFlight.length >= STEPS_IN_FLIGHT_MAX) await inFlight.shift()!;
  };
  const endChunk = async (lengthBytes: number): Promise<void> => {
    const chunk = current.subarray(0, lengthBytes);
    filled = 0;
    if (isAllZero(chunk)) {
      if (offThread) unnamed.push(lengthBytes); // and `current` is filled again
      else builder.append(undefined, lengthBytes);
      return;
    }
    if (offThread) {
      unnamed.push(chunk);
      unnamedChunks++;
    } else {
      const hashed = repository.hashChunk(chunk);
      builder.append(hashed.hash, lengthBytes);
      chunks.push(hashed);
    }
    current = takeChunkBuffer();
    if (chunks.length + unnamedChunks >= CHUNKS_PER_STEP) await dispatch();
  };

  if (options.expectedSizeBytes !== undefined && options.expectedSizeBytes > options.sizeBytesMax) {
    throw new ObjectError('EntityTooLarge', `the body's declared ${options.expectedSizeBytes} bytes are more than the ${options.sizeBytesMax} allowed here`);
  }
  try {
    for await (const piece of body) {
      if (options.signal?.aborted) throw new StorageError('CANCELLED', 'the upload was aborted; nothing of it is kept');
      sizeBytes += piece.length;
      if (sizeBytes > options.sizeBytesMax) {
        throw new ObjectError('EntityTooLarge', `the body is larger than the ${options.sizeBytesMax} bytes allowed here`);
      }
      if (options.expectedSizeBytes !== undefined && sizeBytes > options.expectedSizeBytes) {
        throw new ObjectError('IncompleteBody', `the body is longer than the ${options.expectedSizeBytes} bytes its length header declared`);
      }
      crc?.update(piece);
      if (!digestsFromChunks) {
        offloaded.update(piece);
        const draining = offloaded.whenDrained();
        if (draining !== undefined) await draining;
      }
      for (let at = 0; at < piece.length; ) {
        const take = Math.min(piece.length - at, OBJECT_CHUNK_SIZE_BYTES - filled);
        current.set(piece.subarray(at, at + take), filled);
        filled += take;
        at += take;
        if (filled === OBJECT_CHUNK_SIZE_BYTES) await endChunk(filled);
      }
    }
    if (options.expectedSizeBytes !== undefined && sizeBytes !== options.expectedSizeBytes) {
      throw new ObjectError('IncompleteBody', `the body ended after ${sizeBytes} of the ${options.expectedSizeBytes} bytes its length header declared`);
    }
    const inlineBytesMax = Math.min(options.inlineBytesMax ?? -1, OBJECT_CHUNK_SIZE_BYTES - 1);
    if (options.appendTo === undefined && sizeBytes <= inlineBytesMax) {
      assert(filled === sizeBytes && inFlight.length === 0, 'a small body is still all in the first chunk');
      const inlineBytes = current.slice(0, filled);
      giveBackChunkBuffers([current]);
      return { inlineBytes, sizeBytes, ...(await digestsOf(digests)) };
    }
    if (filled > 0) await endChunk(filled);
    const holdsItsOneStep = options.holdSingleStep === true && stepsDispatched === 0;
    // A body of one step waiting to be named off this thread is named now, to be held as one named here would be.
    if (holdsItsOneStep && unnamedChunks > 0) chunks = await nameWaiting((tokens) => tokens);
    let heldStep: HeldStep | undefined;
    if (holdsItsOneStep && unnamed.length === 0 && chunks.length > 0) {
      const held = chunks;
      chunks = [];
      heldStep = { chunks: held, release: () => giveBackChunkBuffers(held.map((chunk) => chunk.data)) };
    }
    await dispatch();
    while (inFlight.length > 0) await inFlight.shift()!;
    giveBackChunkBuffers([current]);
    const manifest = builder.finish();
    assert(manifest.fileSizeBytes === heldBytes + sizeBytes, 'the manifest covers the whole body');
    try {
      return { manifest, sizeBytes, ...(await digestsOf(digests)), ...(heldStep === undefined ? {} : { heldStep }) };
    } catch (err) {
      heldStep?.release();
      throw err;
    }
  } catch (err) {
    offloaded.abandon();
    // Let every step in flight settle so that abandoning the journal sees their final counts.
    await Promise.allSettled(inFlight);
    throw err;
  }
}

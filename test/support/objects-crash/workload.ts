/**
 * The object-model crash test's workload, shared by the child (which writes it) and the parent
 * (which checks what survived): object i of round r has a size and chunk contents that follow
 * from (r, i) alone, some chunks shared between objects (dedup), none all zero.
 */
import { createHash } from 'node:crypto';

export const CHUNK_BYTES = 64 * 1024;
export const CRASH_POOL = 'pool-a';
export const CRASH_BUCKET = 'crash';
/** Distinct chunk contents objects share. */
const SHARED_CHUNKS = 24;
/** Pieces the body arrives in; the child reports each, so the parent can kill mid-body. */
export const PIECE_BYTES = 256 * 1024;

export interface ObjectSpec {
  readonly key: string;
  readonly sizeBytes: number;
  /** Per chunk, the seed of its content. */
  readonly chunkSeeds: readonly number[];
}

function mix(a: number, b: number): number {
  let x = (Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca6b)) >>> 0;
  x ^= x >>> 15;
  x = Math.imul(x, 0x2c1b3c6d) >>> 0;
  return (x ^ (x >>> 12)) >>> 0;
}

export function objectSpec(round: number, index: number): ObjectSpec {
  const r = mix(round, index);
  // 0.1 to ~10 MiB: up to three writer steps in flight, some objects a chunk or less.
  const sizeBytes = index % 5 === 0 ? (r % CHUNK_BYTES) + 1 : (r % (10 * 1024 * 1024)) + 100 * 1024;
  const chunks = Math.ceil(sizeBytes / CHUNK_BYTES);
  const chunkSeeds = Array.from({ length: chunks }, (_, c) => {
    const pick = mix(r, c);
    return pick % 3 === 0 ? pick % SHARED_CHUNKS : 1000 + mix(pick, round * 100_000 + index);
  });
  return { key: `r${round}/obj-${String(index).padStart(4, '0')}`, sizeBytes, chunkSeeds };
}

export function chunkContent(seed: number): Buffer {
  const out = Buffer.alloc(CHUNK_BYTES);
  let x = mix(seed, 7) | 1;
  for (let i = 0; i < CHUNK_BYTES; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, i);
  }
  out[0] = 1; // never all zero
  return out;
}

/** The object's bytes, piece by piece; `onPiece` is told after each piece is handed out. */
export async function* bodyOf(spec: ObjectSpec, onPiece: (index: number) => void = () => undefined): AsyncGenerator<Uint8Array> {
  const whole = Buffer.concat(spec.chunkSeeds.map(chunkContent)).subarray(0, spec.sizeBytes);
  for (let at = 0, index = 0; at < whole.length; at += PIECE_BYTES, index++) {
    yield whole.subarray(at, Math.min(whole.length, at + PIECE_BYTES));
    onPiece(index);
  }
}

export function md5Of(spec: ObjectSpec): string {
  const hash = createHash('md5');
  hash.update(Buffer.concat(spec.chunkSeeds.map(chunkContent)).subarray(0, spec.sizeBytes));
  return hash.digest('hex');
}

/**
 * MD5 of several bodies at once: a WebAssembly SIMD function that runs the MD5 compression of 4
 * or 8 independent streams side by side, one stream per 32-bit lane of 128-bit vectors (the
 * multi-buffer technique of Intel's ISA-L crypto, which Debian does not ship).
 *
 * Why: the ETag of every PUT is the MD5 of its body, and MD5 cannot be split within one stream:
 * each 64-byte block needs the state the block before left. One stream is a chain of dependent
 * 32-bit adds and rotates (~5 cycles a byte with OpenSSL's assembly, ~48% of one core at 16
 * concurrent 256 MiB PUTs on this 2-core machine). Lanes cost what one stream costs per step, so
 * 4 streams in one vector chain, or 8 in two interleaved chains, hash several bodies for the price of one.
 *
 * The module is generated here (no toolchain, nothing binary in the repository): its code is the
 * 64 MD5 steps unrolled, register roles renamed at generation time instead of moved at run time.
 * Only JavaScript built-ins: the hashing worker (hash-worker.ts) loads this file from src/ (type
 * stripping) and dist/ alike.
 */

/** The part of WebAssembly's JavaScript API used here (the project's lib has no DOM types, where TypeScript declares it). */
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { readonly exports: Record<string, unknown> };
};
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}

/** MD5's block (RFC 1321): the unit the compression works on. */
export const MD5_BLOCK_BYTES = 64;
/** RFC 1321's initial state, words A, B, C, D. */
const MD5_INITIAL_STATE = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476] as const;
/** RFC 1321's per-step left-rotation amounts, four per round. */
const MD5_ROTATIONS = [
  [7, 12, 17, 22],
  [5, 9, 14, 20],
  [4, 11, 16, 23],
  [6, 10, 15, 21],
] as const;
/** RFC 1321's step constants: floor(|sin(i + 1)| * 2^32). */
const MD5_STEP_CONSTANTS = Array.from({ length: 64 }, (_, i) => Math.floor(Math.abs(Math.sin(i + 1)) * 2 ** 32) >>> 0);
/** The message word step i adds (RFC 1321's per-round index orders). */
function messageWordOf(step: number): number {
  if (step < 16) return step;
  if (step < 32) return (5 * step + 1) % 16;
  if (step < 48) return (3 * step + 5) % 16;
  return (7 * step) % 16;
}

/** Streams a vector holds (32-bit lanes of 128 bits). */
const LANES_PER_VECTOR = 4;
/** Lanes of the widest function: two vector chains interleaved, so one's latency hides the other's. */
export const MD5_LANES_MAX = 2 * LANES_PER_VECTOR;
/** Bytes of a lane's data one call takes at most (its region in the module's memory). */
export const MD5_LANE_BYTES_MAX = 64 * 1024;
/** Where the state vectors live in the module's memory (then the lanes' data regions). */
const STATE_OFFSET_BYTES = 0;
const DATA_OFFSET_BYTES = 1024;
const WASM_PAGE_BYTES = 65536;

// WebAssembly's binary encoding (core spec 5, SIMD opcodes as finalized in 2021).
const OP = {
  block: 0x02, loop: 0x03, br: 0x0c, brIf: 0x0d, end: 0x0b,
  localGet: 0x20, localSet: 0x21, localTee: 0x22,
  i32Const: 0x41, i32Eqz: 0x45, i32Add: 0x6a, i32Sub: 0x6b, i32Mul: 0x6c,
  simd: 0xfd,
} as const;
const SIMD = {
  load: 0x00, store: 0x0b, const: 0x0c, shuffle: 0x0d,
  not: 0x4d, or: 0x50, xor: 0x51, bitselect: 0x52,
  i32x4Shl: 0xab, i32x4ShrU: 0xad, i32x4Add: 0xae,
} as const;
const TYPE = { i32: 0x7f, v128: 0x7b, func: 0x60 } as const;

function uleb(value: number): number[] {
  const out: number[] = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value !== 0) byte |= 0x80;
    out.push(byte);
  } while (value !== 0);
  return out;
}

function sleb(value: number): number[] {
  const out: number[] = [];
  value |= 0;
  for (;;) {
    const byte = value & 0x7f;
    value >>= 7;
    if ((value === 0 && (byte & 0x40) === 0) || (value === -1 && (byte & 0x40) !== 0)) return [...out, byte];
    out.push(byte | 0x80);
  }
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

function name(text: string): number[] {
  return [...uleb(text.length), ...Buffer.from(text, 'ascii')];
}

/** v128 memory access: 16-byte alignment hint (log2 4), constant offset. */
function memarg(offsetBytes: number): number[] {
  return [4, ...uleb(offsetBytes)];
}

/** i8x16.shuffle byte indices taking the 32-bit lanes `words` (0-3: the first operand's, 4-7: the second's). */
function wordShuffle(words: readonly number[]): number[] {
  return words.flatMap((word) => [0, 1, 2, 3].map((byte) => word * 4 + byte));
}

/**
 * The body of `md5(state, data, strideBytes, blocks)` over `groups` vector chains: lane k's data
 * is at data + k * strideBytes, `blocks` 64-byte blocks of it; state holds, per chain, vectors A,
 * B, C, D (lane k of chain g is stream g * 4 + k).
 */
function md5Function(groups: number): number[] {
  const lanes = groups * LANES_PER_VECTOR;
  // Locals: params 0-3 (state, data, strideBytes, blocks), then i32 cursor and a base per lane,
  // then per chain: 4 state, 4 saved, 16 message words, 4 rows, 4 transposed pairs, 1 scratch.
  const PARAM_STATE = 0, PARAM_DATA = 1, PARAM_STRIDE = 2, PARAM_BLOCKS = 3;
  const cursor = 4;
  const laneBase = (lane: number): number => 5 + lane;
  const firstVector = 5 + lanes;
  const perChain = 4 + 4 + 16 + 4 + 4 + 1;
  const chainLocal = (chain: number, index: number): number => firstVector + chain * perChain + index;
  const stateLocal = (chain: number, word: number): number => chainLocal(chain, word);
  const savedLocal = (chain: number, word: number): number => chainLocal(chain, 4 + word);
  const wordLocal = (chain: number, word: number): number => chainLocal(chain, 8 + word);
  const rowLocal = (chain: number, row: number): number => chainLocal(chain, 24 + row);
  const pairLocal = (chain: number, pair: number): number => chainLocal(chain, 28 + pair);
  const scratchLocal = (chain: number): number => chainLocal(chain, 32);

  const code: number[] = [];
  const get = (local: number): void => void code.push(OP.localGet, ...uleb(local));
  const set = (local: number): void => void code.push(OP.localSet, ...uleb(local));
  const tee = (local: number): void => void code.push(OP.localTee, ...uleb(local));
  const simd = (op: number, ...immediates: number[]): void => void code.push(OP.simd, ...uleb(op), ...immediates);
  const i32 = (value: number): void => void code.push(OP.i32Const, ...sleb(value));

  // Each lane's base address.
  for (let lane = 0; lane < lanes; lane++) {
    get(PARAM_DATA);
    get(PARAM_STRIDE);
    i32(lane);
    code.push(OP.i32Mul, OP.i32Add);
    set(laneBase(lane));
  }
  i32(0);
  set(cursor);
  for (let chain = 0; chain < groups; chain++) {
    for (let word = 0; word < 4; word++) {
      get(PARAM_STATE);
      simd(SIMD.load, ...memarg((chain * 4 + word) * 16));
      set(stateLocal(chain, word));
    }
  }
  code.push(OP.block, 0x40, OP.loop, 0x40);
  get(PARAM_BLOCKS);
  code.push(OP.i32Eqz, OP.brIf, 1);
  for (let chain = 0; chain < groups; chain++) {
    // The 16 message words, lane k's word w in lane k of vector w: 4 rows of 4 words transposed at a time.
    for (let quad = 0; quad < 4; quad++) {
      for (let row = 0; row < 4; row++) {
        get(laneBase(chain * 4 + row));
        get(cursor);
        code.push(OP.i32Add);
        simd(SIMD.load, ...memarg(quad * 16));
        set(rowLocal(chain, row));
      }
      const interleave = (first: number, second: number, high: boolean, into: number): void => {
        get(first);
        get(second);
        simd(SIMD.shuffle, ...wordShuffle(high ? [2, 6, 3, 7] : [0, 4, 1, 5]));
        set(into);
      };
      interleave(rowLocal(chain, 0), rowLocal(chain, 1), false, pairLocal(chain, 0));
      interleave(rowLocal(chain, 0), rowLocal(chain, 1), true, pairLocal(chain, 1));
      interleave(rowLocal(chain, 2), rowLocal(chain, 3), false, pairLocal(chain, 2));
      interleave(rowLocal(chain, 2), rowLocal(chain, 3), true, pairLocal(chain, 3));
      const columns = (first: number, second: number, high: boolean, into: number): void => {
        get(first);
        get(second);
        simd(SIMD.shuffle, ...wordShuffle(high ? [2, 3, 6, 7] : [0, 1, 4, 5]));
        set(into);
      };
      columns(pairLocal(chain, 0), pairLocal(chain, 2), false, wordLocal(chain, quad * 4));
      columns(pairLocal(chain, 0), pairLocal(chain, 2), true, wordLocal(chain, quad * 4 + 1));
      columns(pairLocal(chain, 1), pairLocal(chain, 3), false, wordLocal(chain, quad * 4 + 2));
      columns(pairLocal(chain, 1), pairLocal(chain, 3), true, wordLocal(chain, quad * 4 + 3));
    }
    for (let word = 0; word < 4; word++) {
      get(stateLocal(chain, word));
      set(savedLocal(chain, word));
    }
  }
  // The 64 steps, chains interleaved step by step; roles (a, b, c, d) renamed instead of moved.
  const roles = Array.from({ length: groups }, (_, chain) => [0, 1, 2, 3].map((word) => stateLocal(chain, word)));
  for (let step = 0; step < 64; step++) {
    const round = step >> 4;
    const rotation = MD5_ROTATIONS[round]![step & 3]!;
    const constant = MD5_STEP_CONSTANTS[step]!;
    for (let chain = 0; chain < groups; chain++) {
      const [a, b, c, d] = roles[chain]! as [number, number, number, number];
      get(a);
      if (round === 0) {
        // F = (b & c) | (~b & d)
        get(c); get(d); get(b);
        simd(SIMD.bitselect);
      } else if (round === 1) {
        // G = (d & b) | (~d & c)
        get(b); get(c); get(d);
        simd(SIMD.bitselect);
      } else if (round === 2) {
        // H = b ^ c ^ d
        get(b); get(c);
        simd(SIMD.xor);
        get(d);
        simd(SIMD.xor);
      } else {
        // I = c ^ (b | ~d)
        get(c); get(b); get(d);
        simd(SIMD.not);
        simd(SIMD.or);
        simd(SIMD.xor);
      }
      simd(SIMD.i32x4Add);
      get(wordLocal(chain, messageWordOf(step)));
      simd(SIMD.const, ...Array.from({ length: LANES_PER_VECTOR }, () => [constant & 0xff, (constant >>> 8) & 0xff, (constant >>> 16) & 0xff, constant >>> 24]).flat());
      simd(SIMD.i32x4Add);
      simd(SIMD.i32x4Add);
      // rotl(t, s) + b, into a's local, which becomes the new b.
      tee(scratchLocal(chain));
      i32(rotation);
      simd(SIMD.i32x4Shl);
      get(scratchLocal(chain));
      i32(32 - rotation);
      simd(SIMD.i32x4ShrU);
      simd(SIMD.or);
      get(b);
      simd(SIMD.i32x4Add);
      set(a);
      roles[chain] = [d, a, b, c];
    }
  }
  for (let chain = 0; chain < groups; chain++) {
    // After 64 steps the roles are back where they started (64 is a multiple of 4).
    for (let word = 0; word < 4; word++) {
      get(stateLocal(chain, word));
      get(savedLocal(chain, word));
      simd(SIMD.i32x4Add);
      set(stateLocal(chain, word));
    }
  }
  get(cursor);
  i32(MD5_BLOCK_BYTES);
  code.push(OP.i32Add);
  set(cursor);
  get(PARAM_BLOCKS);
  i32(1);
  code.push(OP.i32Sub);
  set(PARAM_BLOCKS);
  code.push(OP.br, 0, OP.end, OP.end);
  for (let chain = 0; chain < groups; chain++) {
    for (let word = 0; word < 4; word++) {
      get(PARAM_STATE);
      get(stateLocal(chain, word));
      simd(SIMD.store, ...memarg((chain * 4 + word) * 16));
    }
  }
  code.push(OP.end);
  const locals = [...uleb(2), ...uleb(1 + lanes), TYPE.i32, ...uleb(groups * perChain), TYPE.v128];
  const body = [...locals, ...code];
  return [...uleb(body.length), ...body];
}

/** The module: memory (exported as `memory`), `md5x4` and `md5x8`. */
function md5Module(memoryPages: number): Uint8Array {
  const signature = [TYPE.func, ...uleb(4), TYPE.i32, TYPE.i32, TYPE.i32, TYPE.i32, ...uleb(0)];
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, [...uleb(1), ...signature]),
    ...section(3, [...uleb(2), 0, 0]),
    ...section(5, [...uleb(1), 0x00, ...uleb(memoryPages)]),
    ...section(7, [...uleb(3), ...name('memory'), 0x02, 0, ...name('md5x4'), 0x00, 0, ...name('md5x8'), 0x00, 1]),
    ...section(10, [...uleb(2), ...md5Function(1), ...md5Function(2)]),
  ];
  return new Uint8Array(bytes);
}

/** One stream's MD5 as the lanes run it: its state words and the bytes hashed so far (its tail short of a block is the caller's, given to finish). */
export class LaneMd5 {
  readonly state = Uint32Array.from(MD5_INITIAL_STATE);
  hashedBytes = 0;
}

/** A stream's next bytes for a call: whole blocks, the same number for every stream of the call. */
export interface LaneWork {
  readonly md5: LaneMd5;
  /** The pieces whose bytes come next, in order; their total is a multiple of MD5_BLOCK_BYTES and at most MD5_LANE_BYTES_MAX. */
  readonly pieces: readonly Uint8Array[];
}

/** The compiled functions and their memory (one per thread: the module is generated and compiled once per thread). */
export class Md5Lanes {
  private readonly memory: WasmMemory;
  private readonly md5x4: (state: number, data: number, strideBytes: number, blocks: number) => void;
  private readonly md5x8: (state: number, data: number, strideBytes: number, blocks: number) => void;

  constructor() {
    const pages = Math.ceil((DATA_OFFSET_BYTES + MD5_LANES_MAX * MD5_LANE_BYTES_MAX) / WASM_PAGE_BYTES);
    const instance = new WebAssembly.Instance(new WebAssembly.Module(md5Module(pages)));
    const exports = instance.exports as { memory: WasmMemory; md5x4: Md5Lanes['md5x4']; md5x8: Md5Lanes['md5x8'] };
    this.memory = exports.memory;
    this.md5x4 = exports.md5x4;
    this.md5x8 = exports.md5x8;
  }

  /** Runs each stream's pieces through its state; every stream gets the same number of bytes. */
  hash(work: readonly LaneWork[]): void {
    if (work.length === 0) return;
    if (work.length > MD5_LANES_MAX) throw new RangeError(`at most ${MD5_LANES_MAX} streams a call, not ${work.length}`);
    const lengthBytes = work[0]!.pieces.reduce((sum, piece) => sum + piece.length, 0);
    for (const { pieces } of work) {
      if (pieces.reduce((sum, piece) => sum + piece.length, 0) !== lengthBytes) throw new RangeError('every stream of a call takes the same number of bytes');
    }
    if (lengthBytes % MD5_BLOCK_BYTES !== 0 || lengthBytes > MD5_LANE_BYTES_MAX) throw new RangeError(`a call takes whole blocks up to ${MD5_LANE_BYTES_MAX} bytes a stream, not ${lengthBytes}`);
    const bytes = new Uint8Array(this.memory.buffer);
    const words = new Uint32Array(this.memory.buffer, STATE_OFFSET_BYTES, MD5_LANES_MAX * 4);
    work.forEach(({ md5, pieces }, lane) => {
      let at = DATA_OFFSET_BYTES + lane * MD5_LANE_BYTES_MAX;
      for (const piece of pieces) {
        bytes.set(piece, at);
        at += piece.length;
      }
      // Stream (chain g, lane k) has word w at vector (g * 4 + w), lane k.
      const chain = lane >> 2;
      for (let word = 0; word < 4; word++) words[(chain * 4 + word) * 4 + (lane & 3)] = md5.state[word]!;
    });
    const run = work.length > LANES_PER_VECTOR ? this.md5x8 : this.md5x4;
    run(STATE_OFFSET_BYTES, DATA_OFFSET_BYTES, MD5_LANE_BYTES_MAX, lengthBytes / MD5_BLOCK_BYTES);
    work.forEach(({ md5 }, lane) => {
      const chain = lane >> 2;
      for (let word = 0; word < 4; word++) md5.state[word] = words[(chain * 4 + word) * 4 + (lane & 3)]!;
      md5.hashedBytes += lengthBytes;
    });
  }

  /**
   * The digest of a stream whose last bytes (fewer than a block) are `tail`: RFC 1321's padding
   * (0x80, zeros, the length in bits as 64-bit little-endian) hashed alone, then the state's bytes.
   */
  finish(md5: LaneMd5, tail: Uint8Array): Uint8Array {
    if (tail.length >= MD5_BLOCK_BYTES) throw new RangeError('a tail is shorter than a block');
    const totalBytes = md5.hashedBytes + tail.length;
    const paddedBytes = tail.length < MD5_BLOCK_BYTES - 8 ? MD5_BLOCK_BYTES : 2 * MD5_BLOCK_BYTES;
    const last = new Uint8Array(paddedBytes);
    last.set(tail);
    last[tail.length] = 0x80;
    const view = new DataView(last.buffer);
    // The length in bits: bytes * 8 split so that bodies past 512 MiB keep their high bits.
    view.setUint32(paddedBytes - 8, (totalBytes * 8) >>> 0, true);
    view.setUint32(paddedBytes - 4, Math.floor(totalBytes / 2 ** 29), true);
    this.hash([{ md5, pieces: [last] }]);
    const digest = new Uint8Array(16);
    const out = new DataView(digest.buffer);
    for (let word = 0; word < 4; word++) out.setUint32(word * 4, md5.state[word]!, true);
    return digest;
  }
}

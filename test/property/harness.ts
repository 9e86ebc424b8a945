/**
 * Differential property-testing harness: the same random sequence of operations is applied
 *
 *   - by Strata, through the Qcow2Image API, to image A;
 *   - by QEMU (qemu-io batches, qemu-img snapshot between them) to image B, created identically
 *     by qemu-img;
 *   - to a plain in-memory byte model (the expected guest contents, and those of each snapshot).
 *
 * Then: `qemu-img check A` must be clean (exit 0, no leaks, no corruptions, no dirty/corrupt bit),
 * `qemu-img compare A B` must find them equal, B must match the model (which validates the model
 * itself), Strata's own read of A must match the model, and every snapshot left must hold the same
 * contents on both sides (qemu-img convert -l snapshot.name=X) as in the model.
 *
 * Operations are generated abstractly (cluster indices, offset kinds, length kinds) and resolved
 * against the image's size and cluster size just before running, so shrinking the image size or
 * the sequence keeps every operation valid. Operations that would be invalid (a snapshot that
 * does not exist, a compressed write QEMU would refuse) resolve to nothing on every side.
 */
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import type { Qcow2CreateOptions } from '../../formats/qcow2/index.js';
import type { BackingRef, Image } from '../../src/core/image.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { qemuImg, qemuIo, type RunResult } from '../support/tools.js';

// -------------------------------------------------------------------------------------------------
// Variants

export interface Variant {
  name: string;
  /** Options for both sides; sizeBytes and the backing file are filled in per run. */
  create: Omit<Qcow2CreateOptions, 'sizeBytes' | 'backingFile' | 'backingFormat'>;
  /** Give both images the same backing file (made first by qemu-io). */
  backing?: boolean;
  /** Snapshot operations are generated (not with refcount_bits=1: no refcount can reach 2). */
  snapshots: boolean;
}

export const VARIANTS = {
  default: { name: 'default (64k, refcount 16, v3)', create: {}, snapshots: true },
  cluster512: { name: 'cluster_size=512', create: { clusterSizeBytes: 512 }, snapshots: true },
  cluster4k: { name: 'cluster_size=4k', create: { clusterSizeBytes: 4096 }, snapshots: true },
  refcount1: { name: 'refcount_bits=1', create: { refcountBits: 1 }, snapshots: false },
  refcount64: { name: 'refcount_bits=64', create: { refcountBits: 64 }, snapshots: true },
  compat010: { name: 'compat=0.10', create: { compat: '0.10' }, snapshots: true },
  extendedL2: { name: 'extended_l2=on', create: { extendedL2: true }, snapshots: true },
  extendedL2c16k: { name: 'extended_l2=on cluster_size=16k', create: { extendedL2: true, clusterSizeBytes: 16384 }, snapshots: true },
  lazy: { name: 'lazy_refcounts=on', create: { lazyRefcounts: true }, snapshots: true },
  zstd: { name: 'compression_type=zstd', create: { compressionType: 'zstd' }, snapshots: true },
  backing: { name: 'backing file', create: {}, backing: true, snapshots: true },
} satisfies Record<string, Variant>;

/** qemu-img create -o for a variant. */
export function qemuCreateOptions(v: Variant['create'], backing: string | undefined): string {
  const o: string[] = [];
  if (v.clusterSizeBytes !== undefined) o.push(`cluster_size=${v.clusterSizeBytes}`);
  if (v.refcountBits !== undefined) o.push(`refcount_bits=${v.refcountBits}`);
  if (v.compat !== undefined) o.push(`compat=${v.compat}`);
  if (v.extendedL2) o.push('extended_l2=on');
  if (v.lazyRefcounts) o.push('lazy_refcounts=on');
  if (v.compressionType !== undefined) o.push(`compression_type=${v.compressionType}`);
  if (backing !== undefined) o.push(`backing_file=${backing}`, 'backing_fmt=qcow2');
  return o.join(',');
}

/** Any valid combination of the create options (for the "mixed" property). */
export function arbMixedVariant(): fc.Arbitrary<Variant> {
  return fc
    .record({
      cluster: fc.constantFrom(512, 1024, 4096, 16384, 65536, 131072),
      refcountBits: fc.constantFrom(1, 2, 4, 8, 16, 32, 64),
      v2: fc.boolean(),
      extendedL2: fc.boolean(),
      lazy: fc.boolean(),
      zstd: fc.boolean(),
      backing: fc.boolean(),
    })
    .map(({ cluster, refcountBits, v2, extendedL2, lazy, zstd, backing }) => {
      const create: Variant['create'] = { clusterSizeBytes: cluster };
      if (v2) {
        create.compat = '0.10';
      } else {
        create.refcountBits = refcountBits;
        if (extendedL2 && cluster >= 16384) create.extendedL2 = true;
        if (lazy) create.lazyRefcounts = true;
        if (zstd) create.compressionType = 'zstd';
      }
      const bits = create.refcountBits ?? 16;
      const name = `mixed ${qemuCreateOptions(create, undefined)}${backing ? ' +backing' : ''}`;
      // Narrow refcounts overflow once snapshots share clusters (QEMU and Strata both refuse then).
      return { name, create, backing, snapshots: bits >= 8 } satisfies Variant;
    });
}

// -------------------------------------------------------------------------------------------------
// Data

/** Write payloads: a repeated byte, incompressible pseudo-random bytes, or half of each. */
export type DataSpec = { kind: 'pattern'; byte: number } | { kind: 'random'; seed: number } | { kind: 'mixed'; seed: number; byte: number };

export function dataBytes(spec: DataSpec, length: number): Uint8Array {
  const out = new Uint8Array(length);
  if (spec.kind === 'pattern') return out.fill(spec.byte);
  let state = (spec.seed >>> 0) ^ 0x9e3779b9 || 1;
  const randomEnd = spec.kind === 'random' ? length : Math.floor(length / 2);
  for (let i = 0; i < randomEnd; i++) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    out[i] = state & 0xff;
  }
  if (spec.kind === 'mixed') out.fill(spec.byte, randomEnd);
  return out;
}

function describeData(spec: DataSpec): string {
  if (spec.kind === 'pattern') return `pattern 0x${spec.byte.toString(16).padStart(2, '0')}`;
  if (spec.kind === 'random') return `random(seed ${spec.seed})`;
  return `mixed(seed ${spec.seed}, 0x${spec.byte.toString(16).padStart(2, '0')})`;
}

// -------------------------------------------------------------------------------------------------
// Abstract operations (what fast-check generates and shrinks)

export interface Loc {
  /** Cluster index (modulo the cluster count), counted from the end when fromEnd. */
  cluster: number;
  fromEnd: boolean;
  /** Offset inside the cluster: none, a whole number of sectors, or any byte. */
  sub: 'aligned' | 'sector' | 'byte';
  r: number;
}

export interface Len {
  kind: 'small' | 'clusters' | 'big' | 'toEnd';
  n: number;
  /** Added to 'clusters' lengths, so they are sometimes a little off a multiple of the cluster. */
  delta: number;
}

export type AbstractOp =
  | { op: 'write'; at: Loc; len: Len; data: DataSpec }
  | { op: 'zero'; at: Loc; len: Len; unmap: boolean }
  | { op: 'discard'; at: Loc; len: Len }
  | { op: 'compress'; at: Loc; data: DataSpec }
  | { op: 'flush' }
  | { op: 'reopen' }
  | { op: 'snapshot'; action: 'create' | 'apply' | 'delete'; name: number };

const arbLoc: fc.Arbitrary<Loc> = fc.record({
  cluster: fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 0, max: 7 }) }, { weight: 1, arbitrary: fc.nat() }),
  fromEnd: fc.oneof({ weight: 4, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  sub: fc.constantFrom('aligned', 'sector', 'byte'),
  r: fc.nat(),
});

const arbLen: fc.Arbitrary<Len> = fc.record({
  kind: fc.oneof(
    { weight: 3, arbitrary: fc.constant('small' as const) },
    { weight: 3, arbitrary: fc.constant('clusters' as const) },
    { weight: 1, arbitrary: fc.constant('big' as const) },
    { weight: 1, arbitrary: fc.constant('toEnd' as const) },
  ),
  n: fc.nat(),
  delta: fc.oneof({ weight: 2, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -700, max: 700 }) }),
});

export const arbData: fc.Arbitrary<DataSpec> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('pattern' as const), byte: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('random' as const), seed: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('mixed' as const), seed: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }) },
);

export function arbOp(options: { snapshots: boolean; reopen?: boolean }): fc.Arbitrary<AbstractOp> {
  const ops: fc.WeightedArbitrary<AbstractOp>[] = [
    { weight: 6, arbitrary: fc.record({ op: fc.constant('write' as const), at: arbLoc, len: arbLen, data: arbData }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('zero' as const), at: arbLoc, len: arbLen, unmap: fc.boolean() }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('discard' as const), at: arbLoc, len: arbLen }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('compress' as const), at: arbLoc, data: arbData }) },
    { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
  ];
  if (options.reopen !== false) ops.push({ weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) });
  if (options.snapshots) {
    ops.push({
      weight: 3,
      arbitrary: fc.record({
        op: fc.constant('snapshot' as const),
        action: fc.oneof(
          { weight: 3, arbitrary: fc.constant('create' as const) },
          { weight: 2, arbitrary: fc.constant('apply' as const) },
          { weight: 1, arbitrary: fc.constant('delete' as const) },
        ),
        name: fc.integer({ min: 0, max: 3 }),
      }),
    });
  }
  return fc.oneof(...ops);
}

export function arbOps(options: { snapshots: boolean; reopen?: boolean; minLength?: number; maxLength?: number }): fc.Arbitrary<AbstractOp[]> {
  return fc.array(arbOp(options), { minLength: options.minLength ?? 5, maxLength: options.maxLength ?? 40 });
}

/** Image sizes: 1-16 MiB in 512-byte steps (qemu-img rounds to sectors), often round numbers. */
export const arbSizeBytes: fc.Arbitrary<number> = fc.oneof(
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 16 }).map((mib) => mib * 1024 * 1024) },
  { weight: 2, arbitrary: fc.integer({ min: 2048, max: 8192 }).map((sectors) => sectors * 512) },
  { weight: 1, arbitrary: fc.integer({ min: 2048, max: 32768 }).map((sectors) => sectors * 512) },
);

// -------------------------------------------------------------------------------------------------
// Concrete operations

export type Op =
  | { op: 'write'; off: number; len: number; data: DataSpec }
  | { op: 'zero'; off: number; len: number; unmap: boolean }
  | { op: 'discard'; off: number; len: number }
  | { op: 'compress'; off: number; len: number; data: DataSpec }
  | { op: 'flush' }
  | { op: 'reopen' }
  | { op: 'snapshot'; action: 'create' | 'apply' | 'delete'; name: string };

export function describeOp(op: Op): string {
  switch (op.op) {
    case 'write':
      return `write      off=${op.off} len=${op.len} ${describeData(op.data)}`;
    case 'zero':
      return `writeZeroes off=${op.off} len=${op.len}${op.unmap ? ' mayUnmap' : ''}`;
    case 'discard':
      return `discard    off=${op.off} len=${op.len}`;
    case 'compress':
      return `compressed off=${op.off} len=${op.len} ${describeData(op.data)}`;
    case 'flush':
    case 'reopen':
      return op.op;
    case 'snapshot':
      return `snapshot ${op.action} ${op.name}`;
  }
}

export function describeOps(ops: readonly Op[]): string {
  return ops.map((op, i) => `  ${String(i).padStart(2)}: ${describeOp(op)}`).join('\n');
}

export interface ResolveContext {
  sizeBytes: number;
  clusterSizeBytes: number;
  /**
   * QEMU 7.2 refuses (EIO) a compressed write to a cluster whose L2 entry has a host offset. When
   * true, compressed writes go only to clusters no earlier operation touched (the nearest such
   * cluster at or after the one generated, else the operation is dropped).
   */
  restrictCompressed: boolean;
  /** Clusters any earlier operation touched (shared across phases). */
  touched: Set<number>;
  /** Snapshot names that exist now (shared across phases). */
  snapshots: Set<string>;
}

export function newResolveContext(sizeBytes: number, clusterSizeBytes: number, restrictCompressed: boolean): ResolveContext {
  return { sizeBytes, clusterSizeBytes, restrictCompressed, touched: new Set(), snapshots: new Set() };
}

function resolveOffset(at: Loc, ctx: ResolveContext): number {
  const cs = ctx.clusterSizeBytes;
  const clusters = Math.ceil(ctx.sizeBytes / cs);
  const index = at.fromEnd ? clusters - 1 - (at.cluster % clusters) : at.cluster % clusters;
  let off = index * cs;
  if (at.sub === 'sector') off += (at.r % (cs / 512)) * 512;
  else if (at.sub === 'byte') off += at.r % cs;
  return Math.min(off, ctx.sizeBytes - 1);
}

function resolveLength(len: Len, off: number, ctx: ResolveContext): number {
  const cs = ctx.clusterSizeBytes;
  const room = ctx.sizeBytes - off;
  let n: number;
  switch (len.kind) {
    case 'small':
      n = 1 + (len.n % Math.max(cs, 4096));
      break;
    case 'clusters':
      n = (1 + (len.n % 8)) * cs + len.delta;
      break;
    case 'big':
      n = 1 + (len.n % (2 * 1024 * 1024));
      break;
    case 'toEnd':
      n = room;
      break;
  }
  return Math.max(1, Math.min(n, room));
}

function touch(ctx: ResolveContext, off: number, len: number): void {
  const cs = ctx.clusterSizeBytes;
  for (let c = Math.floor(off / cs); c <= Math.floor((off + len - 1) / cs); c++) ctx.touched.add(c);
}

/** Abstract operations to concrete ones, dropping those that cannot apply. Updates ctx. */
export function resolveOps(abstract: readonly AbstractOp[], ctx: ResolveContext): Op[] {
  const out: Op[] = [];
  const cs = ctx.clusterSizeBytes;
  const clusters = Math.ceil(ctx.sizeBytes / cs);
  for (const a of abstract) {
    switch (a.op) {
      case 'write':
      case 'zero':
      case 'discard': {
        const off = resolveOffset(a.at, ctx);
        const len = resolveLength(a.len, off, ctx);
        touch(ctx, off, len);
        if (a.op === 'write') out.push({ op: 'write', off, len, data: a.data });
        else if (a.op === 'zero') out.push({ op: 'zero', off, len, unmap: a.unmap });
        else out.push({ op: 'discard', off, len });
        break;
      }
      case 'compress': {
        let cluster = Math.floor(resolveOffset(a.at, ctx) / cs);
        if (ctx.restrictCompressed) {
          let found = -1;
          for (let i = 0; i < clusters; i++) {
            const c = (cluster + i) % clusters;
            if (!ctx.touched.has(c)) {
              found = c;
              break;
            }
          }
          if (found < 0) break;
          cluster = found;
        }
        const off = cluster * cs;
        const len = Math.min(cs, ctx.sizeBytes - off);
        touch(ctx, off, len);
        out.push({ op: 'compress', off, len, data: a.data });
        break;
      }
      case 'flush':
      case 'reopen':
        out.push({ op: a.op });
        break;
      case 'snapshot': {
        const name = `s${a.name}`;
        const exists = ctx.snapshots.has(name);
        if (a.action === 'create') {
          if (exists) break;
          ctx.snapshots.add(name);
        } else {
          if (!exists) break;
          if (a.action === 'delete') ctx.snapshots.delete(name);
        }
        out.push({ op: 'snapshot', action: a.action, name });
        break;
      }
    }
  }
  return out;
}

// -------------------------------------------------------------------------------------------------
// The model

export class Model {
  current: Uint8Array;
  readonly snapshots = new Map<string, Uint8Array>();

  constructor(
    readonly sizeBytes: number,
    readonly clusterSizeBytes: number,
    /** Guest contents of the backing file as the image sees it (zero past its end), if any. */
    readonly backing: Uint8Array | undefined,
    readonly version: 2 | 3,
  ) {
    this.current = backing ? backing.slice() : new Uint8Array(sizeBytes);
  }

  apply(op: Op): void {
    switch (op.op) {
      case 'write':
      case 'compress':
        this.current.set(dataBytes(op.data, op.len), op.off);
        break;
      case 'zero':
        this.current.fill(0, op.off, op.off + op.len);
        break;
      case 'discard': {
        // Whole clusters only; the partial cluster at the end of the image counts as whole.
        const cs = this.clusterSizeBytes;
        const end = op.off + op.len;
        const start = Math.ceil(op.off / cs) * cs;
        const alignedEnd = end === this.sizeBytes ? end : Math.floor(end / cs) * cs;
        if (start >= alignedEnd) break;
        // QEMU ignores discards on a v2 image with a backing file (no zero flag: the backing file
        // would show through); so does Strata.
        if (this.version === 2 && this.backing) break;
        this.current.fill(0, start, alignedEnd);
        break;
      }
      case 'flush':
      case 'reopen':
        break;
      case 'snapshot':
        if (op.action === 'create') this.snapshots.set(op.name, this.current.slice());
        else if (op.action === 'apply') this.current = this.snapshots.get(op.name)!.slice();
        else this.snapshots.delete(op.name);
        break;
    }
  }
}

// -------------------------------------------------------------------------------------------------
// Running a sequence

export interface RunDirs {
  dir: string;
  /** Strata's image. */
  a: string;
  /** QEMU's image. */
  b: string;
  backing: string | undefined;
}

function check(result: RunResult, what: string): RunResult {
  if (result.code !== 0) {
    throw new Error(`${what} failed (exit ${result.code ?? result.signal})\n${result.stdout}${result.stderr}`);
  }
  return result;
}

async function openBacking(ref: BackingRef, depth: number): Promise<Image> {
  const file = await LocalHostFile.open(path.resolve(path.dirname(ref.childName), ref.fileName), { readOnly: true });
  return Qcow2Image.open(file, { readOnly: true, depth, openBacking });
}

export async function openStrata(file: string, readOnly = false): Promise<Qcow2Image> {
  const host = await LocalHostFile.open(file, { readOnly });
  try {
    return await Qcow2Image.open(host, { readOnly, openBacking });
  } catch (err) {
    await host.close();
    throw err;
  }
}

/** One qemu-io invocation for a batch of I/O operations on B. */
function qemuIoBatch(dirs: RunDirs, ops: readonly Op[], batchId: string): void {
  if (ops.length === 0) return;
  const args: string[] = ['-f', 'qcow2'];
  let fileNo = 0;
  const source = (spec: DataSpec, len: number): string[] => {
    if (spec.kind === 'pattern') return ['-P', `0x${spec.byte.toString(16)}`];
    const file = path.join(dirs.dir, `src-${batchId}-${fileNo++}.bin`);
    fs.writeFileSync(file, dataBytes(spec, len));
    return ['-s', file];
  };
  for (const op of ops) {
    switch (op.op) {
      case 'write':
        args.push('-c', ['write', '-q', ...source(op.data, op.len), op.off, op.len].join(' '));
        break;
      case 'compress':
        args.push('-c', ['write', '-q', '-c', ...source(op.data, op.len), op.off, op.len].join(' '));
        break;
      case 'zero':
        args.push('-c', ['write', '-q', '-z', ...(op.unmap ? ['-u'] : []), op.off, op.len].join(' '));
        break;
      case 'discard':
        args.push('-c', `discard -q ${op.off} ${op.len}`);
        break;
      case 'flush':
        args.push('-c', 'flush');
        break;
      default:
        throw new Error(`not a qemu-io operation: ${op.op}`);
    }
  }
  args.push(dirs.b);
  const result = qemuIo(args);
  if (result.code !== 0 || /fail|error/i.test(result.stdout + result.stderr)) {
    throw new Error(`qemu-io batch failed (the model asked QEMU for something it refuses?)\nqemu-io ${args.join(' ')}\n${result.stdout}${result.stderr}`);
  }
  for (let i = 0; i < fileNo; i++) fs.rmSync(path.join(dirs.dir, `src-${batchId}-${i}.bin`), { force: true });
}

const QEMU_SNAPSHOT_FLAG = { create: '-c', apply: '-a', delete: '-d' } as const;

/**
 * Applies ops to B with qemu-io batches split by snapshot operations (qemu-img snapshot).
 *
 * QEMU 7.2 keeps packing compressed data after the last compressed cluster it wrote (its
 * free_byte_offset) even once that host cluster was freed and reused, e.g. for an L2 table; its
 * overlap check then refuses the write with EIO and marks the image corrupt. That state lives only
 * as long as the qemu-io process, so a compressed write that follows an operation overlapping a
 * guest cluster compressed earlier in the same batch starts a new qemu-io process.
 */
export function applyQemu(dirs: RunDirs, ops: readonly Op[], phase: string, clusterSizeBytes: number): void {
  let batch: Op[] = [];
  let batchNo = 0;
  let compressedInBatch = new Set<number>();
  let mayHaveFreedCompressed = false;
  const flushBatch = () => {
    qemuIoBatch(dirs, batch, `${phase}${batchNo++}`);
    batch = [];
    compressedInBatch = new Set();
    mayHaveFreedCompressed = false;
  };
  for (const op of ops) {
    if (op.op === 'write' || op.op === 'zero' || op.op === 'discard') {
      const first = Math.floor(op.off / clusterSizeBytes);
      const last = Math.floor((op.off + op.len - 1) / clusterSizeBytes);
      for (const c of compressedInBatch) if (c >= first && c <= last) mayHaveFreedCompressed = true;
    } else if (op.op === 'compress') {
      if (mayHaveFreedCompressed) flushBatch();
      compressedInBatch.add(Math.floor(op.off / clusterSizeBytes));
    }
    if (op.op === 'snapshot') {
      flushBatch();
      check(qemuImg(['snapshot', QEMU_SNAPSHOT_FLAG[op.action], op.name, dirs.b]), `qemu-img snapshot ${op.action} ${op.name}`);
    } else if (op.op === 'reopen') {
      flushBatch();
    } else {
      batch.push(op);
    }
  }
  flushBatch();
}

function isIo(op: Op): op is Extract<Op, { off: number }> {
  return op.op === 'write' || op.op === 'compress' || op.op === 'zero' || op.op === 'discard';
}

async function strataIo(image: Qcow2Image, op: Extract<Op, { off: number }>): Promise<void> {
  switch (op.op) {
    case 'write':
      return image.write(op.off, dataBytes(op.data, op.len));
    case 'compress':
      return image.writeCompressed(op.off, dataBytes(op.data, op.len));
    case 'zero':
      return image.writeZeroes(op.off, op.len, { mayUnmap: op.unmap });
    case 'discard':
      return image.discard(op.off, op.len);
  }
}

/**
 * Applies ops to A through the Strata API; the image is closed at the end. With `concurrent`, runs
 * of I/O operations on disjoint byte ranges are issued together (Promise.all), which must give the
 * same result as issuing them one by one.
 */
export async function applyStrata(file: string, ops: readonly Op[], concurrent = false): Promise<void> {
  let image: Qcow2Image | undefined = await openStrata(file);
  const fail = (i: number, err: unknown): never => {
    throw new Error(`Strata failed at op ${i} (${describeOp(ops[i]!)}): ${(err as Error).stack ?? String(err)}`);
  };
  try {
    for (let i = 0; i < ops.length; ) {
      const op = ops[i]!;
      if (!image) throw new Error('image not open');
      if (isIo(op)) {
        // The longest run (up to 8) of I/O operations on pairwise disjoint byte ranges (often in
        // the same clusters). Any order of those gives the same guest contents. (Discard only
        // drops whole clusters inside its range, compressed writes cover their whole cluster.)
        const group: number[] = [i];
        if (concurrent) {
          const ranges: [number, number][] = [[op.off, op.off + op.len]];
          for (let j = i + 1; j < ops.length && group.length < 8; j++) {
            const next = ops[j]!;
            if (!isIo(next)) break;
            const end = next.off + next.len;
            if (ranges.some(([a, b]) => next.off < b && a < end)) break;
            ranges.push([next.off, end]);
            group.push(j);
          }
        }
        const current = image;
        const results = await Promise.allSettled(group.map((j) => strataIo(current, ops[j] as Extract<Op, { off: number }>)));
        results.forEach((r, k) => {
          if (r.status === 'rejected') fail(group[k]!, r.reason);
        });
        i += group.length;
        continue;
      }
      try {
        switch (op.op) {
          case 'flush':
            await image.flush();
            break;
          case 'reopen': {
            const old: Qcow2Image = image;
            image = undefined;
            await old.close();
            image = await openStrata(file);
            break;
          }
          case 'snapshot':
            if (op.action === 'create') await image.createSnapshot(op.name);
            else if (op.action === 'apply') await image.applySnapshot(op.name);
            else await image.deleteSnapshot(op.name);
            break;
        }
      } catch (err) {
        fail(i, err);
      }
      i++;
    }
  } finally {
    await image?.close();
  }
}

// -------------------------------------------------------------------------------------------------
// Verification

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  // Compare 8 bytes at a time where possible: images are megabytes.
  const step = 8;
  let i = 0;
  if (a.byteOffset % step === 0 && b.byteOffset % step === 0) {
    const wa = new BigUint64Array(a.buffer, a.byteOffset, Math.floor(n / step));
    const wb = new BigUint64Array(b.buffer, b.byteOffset, Math.floor(n / step));
    let w = 0;
    while (w < wa.length && wa[w] === wb[w]) w++;
    i = w * step;
  }
  for (; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

function describeDifference(what: string, actual: Uint8Array, expected: Uint8Array, clusterSizeBytes: number): string | undefined {
  const at = firstDifference(actual, expected);
  if (at < 0) return undefined;
  if (actual.length !== expected.length) return `${what}: length ${actual.length}, expected ${expected.length}`;
  let end = at;
  while (end < actual.length && actual[end] !== expected[end]) end++;
  const hex = (b: Uint8Array) => Array.from(b.subarray(at, Math.min(at + 8, b.length)), (x) => x.toString(16).padStart(2, '0')).join(' ');
  return (
    `${what}: first difference at guest offset ${at} (cluster ${Math.floor(at / clusterSizeBytes)}, +${at % clusterSizeBytes}), ` +
    `differing run of ${end - at} bytes; actual ${hex(actual)}..., expected ${hex(expected)}...`
  );
}

function readRaw(file: string): Uint8Array {
  const buf = fs.readFileSync(file);
  // A fresh, 8-byte-aligned copy for the fast comparison.
  const out = new Uint8Array(buf.length);
  out.set(buf);
  return out;
}

function convertToRaw(image: string, out: string, snapshot?: string): Uint8Array {
  const args = ['convert', '-f', 'qcow2', '-O', 'raw', ...(snapshot ? ['-l', `snapshot.name=${snapshot}`] : []), image, out];
  const result = qemuImg(args);
  if (result.code !== 0) throw new Error(`qemu-img ${args.join(' ')} failed (exit ${result.code}): ${result.stdout}${result.stderr}`.trim());
  const bytes = readRaw(out);
  fs.rmSync(out, { force: true });
  return bytes;
}

/** convertToRaw, with a failure recorded as a problem instead of thrown. */
function convertOrNote(problems: string[], image: string, out: string, snapshot?: string): Uint8Array | undefined {
  try {
    return convertToRaw(image, out, snapshot);
  } catch (err) {
    problems.push((err as Error).message);
    return undefined;
  }
}

function noteDifference(problems: string[], what: string, actual: Uint8Array | undefined, expected: Uint8Array, cs: number): void {
  if (!actual) return;
  const d = describeDifference(what, actual, expected, cs);
  if (d) problems.push(d);
}

/** Strata's own read of A (opened read-only afresh) against the model, and its snapshot list. */
async function strataReadback(problems: string[], dirs: RunDirs, model: Model): Promise<void> {
  try {
    const image = await openStrata(dirs.a, true);
    try {
      const aRead = new Uint8Array(model.sizeBytes);
      await image.read(0, aRead);
      noteDifference(problems, 'Strata read of A vs model', aRead, model.current, model.clusterSizeBytes);
      const names = image.listSnapshots().map((s) => s.name);
      const expected = [...model.snapshots.keys()];
      if (JSON.stringify(names) !== JSON.stringify(expected)) {
        problems.push(`A's snapshots ${JSON.stringify(names)}, expected ${JSON.stringify(expected)}`);
      }
    } finally {
      await image.close();
    }
  } catch (err) {
    problems.push(`Strata read of A failed: ${(err as Error).message}`);
  }
}

interface QemuCheckJson {
  'check-errors'?: number;
  corruptions?: number;
  leaks?: number;
}

/** qemu-img check A must be clean, and A's header must not be left dirty or corrupt. */
function checkImageA(problems: string[], dirs: RunDirs): void {
  const checked = qemuImg(['check', '-f', 'qcow2', '--output=json', dirs.a]);
  if (checked.code !== 0) {
    const human = qemuImg(['check', '-f', 'qcow2', dirs.a]);
    problems.push(`qemu-img check A exited ${checked.code}:\n${human.stdout}${human.stderr}`);
  } else {
    const json = JSON.parse(checked.stdout) as QemuCheckJson;
    if ((json.leaks ?? 0) !== 0 || (json.corruptions ?? 0) !== 0 || (json['check-errors'] ?? 0) !== 0) {
      problems.push(`qemu-img check A: ${checked.stdout}`);
    }
  }
  const header = Buffer.alloc(80);
  const fd = fs.openSync(dirs.a, 'r');
  fs.readSync(fd, header, 0, 80, 0);
  fs.closeSync(fd);
  if (header.readUInt32BE(4) >= 3) {
    const incompatible = header.readBigUInt64BE(72);
    if (incompatible & 3n) problems.push(`A's header has incompatible features 0x${incompatible.toString(16)} (dirty/corrupt) after close`);
  }
}

export async function verify(dirs: RunDirs, model: Model): Promise<void> {
  const problems: string[] = [];
  const cs = model.clusterSizeBytes;

  // 1. qemu-img check A: clean after a clean close.
  checkImageA(problems, dirs);

  // 2. qemu-img compare A B.
  const compared = qemuImg(['compare', '-f', 'qcow2', '-F', 'qcow2', dirs.a, dirs.b]);
  if (compared.code !== 0) problems.push(`qemu-img compare A B exited ${compared.code}: ${compared.stdout}${compared.stderr}`.trim());

  // 3. B against the model (validates the model), and Strata's own reading of A against it.
  noteDifference(problems, 'QEMU image B vs model', convertOrNote(problems, dirs.b, path.join(dirs.dir, 'b.raw')), model.current, cs);
  await strataReadback(problems, dirs, model);

  // 4. Every snapshot left: same contents on both sides, as in the model.
  for (const [name, expected] of model.snapshots) {
    const aSnap = convertOrNote(problems, dirs.a, path.join(dirs.dir, 'a-snap.raw'), name);
    noteDifference(problems, `snapshot ${name} of A vs model`, aSnap, expected, cs);
    const bSnap = convertOrNote(problems, dirs.b, path.join(dirs.dir, 'b-snap.raw'), name);
    noteDifference(problems, `snapshot ${name} of B (QEMU) vs model`, bSnap, expected, cs);
  }

  if (problems.length > 0) throw new Error(problems.join('\n'));
}

// -------------------------------------------------------------------------------------------------
// Whole scenarios

/** Makes the shared backing file with qemu-io; returns its guest contents as the top image sees them. */
function makeBacking(dirs: RunDirs, sizeBytes: number, backingSizeBytes: number, seed: number): Uint8Array {
  const file = dirs.backing!;
  check(qemuImg(['create', '-q', '-f', 'qcow2', file, String(backingSizeBytes)]), 'qemu-img create backing');
  // Some random data, some patterns, some holes: 64 KiB stripes.
  const contents = new Uint8Array(sizeBytes);
  const args: string[] = ['-f', 'qcow2'];
  const stripe = 65536;
  let n = 0;
  for (let off = 0; off < backingSizeBytes; off += stripe) {
    const len = Math.min(stripe, backingSizeBytes - off);
    const kind = (seed + off / stripe) % 4;
    if (kind === 0) continue;
    const spec: DataSpec = kind === 1 ? { kind: 'pattern', byte: (seed + off / stripe) & 0xff || 1 } : { kind: 'random', seed: seed + off };
    if (spec.kind === 'pattern') {
      args.push('-c', `write -q -P 0x${spec.byte.toString(16)} ${off} ${len}`);
    } else {
      const src = path.join(dirs.dir, `base-${n++}.bin`);
      fs.writeFileSync(src, dataBytes(spec, len));
      args.push('-c', `write -q -s ${src} ${off} ${len}`);
    }
    if (off < sizeBytes) contents.set(dataBytes(spec, len).subarray(0, Math.min(len, sizeBytes - off)), off);
  }
  args.push(file);
  check(qemuIo(args), 'qemu-io on the backing file');
  return contents;
}

export interface Scenario {
  variant: Variant;
  sizeBytes: number;
  /** Backing file size relative to the image: 0 same, 1 smaller, 2 larger. */
  backingSize: number;
  backingSeed: number;
  /** Who creates A: Strata's Qcow2Image.create or qemu-img create. */
  createA: 'strata' | 'qemu';
  /** Done by qemu-io on B (then copied to A) before the Strata phase: the reverse direction. */
  qemuFirst: AbstractOp[];
  ops: AbstractOp[];
  /** Compressed writes only where QEMU accepts them (on never-touched clusters). */
  restrictCompressed: boolean;
  /** Skip image B: compare Strata with the model only (for operations QEMU cannot do). */
  modelOnly: boolean;
  /** Strata issues runs of I/O on disjoint byte ranges concurrently. */
  concurrent: boolean;
}

/** A scenario with concrete operations: what regression tests write down directly. */
export interface ResolvedScenario {
  variant: Variant;
  sizeBytes: number;
  backingSize?: number;
  backingSeed?: number;
  createA?: 'strata' | 'qemu';
  qemuFirst?: Op[];
  ops: Op[];
  modelOnly?: boolean;
  concurrent?: boolean;
}

export function resolveScenario(s: Scenario): ResolvedScenario {
  const ctx = newResolveContext(s.sizeBytes, clusterSizeOf(s.variant), s.restrictCompressed);
  const qemuFirst = resolveOps(s.qemuFirst, ctx);
  const ops = resolveOps(s.ops, ctx);
  return {
    variant: s.variant,
    sizeBytes: s.sizeBytes,
    backingSize: s.backingSize,
    backingSeed: s.backingSeed,
    createA: s.createA,
    qemuFirst,
    ops,
    modelOnly: s.modelOnly,
    concurrent: s.concurrent,
  };
}

export function describeScenario(s: ResolvedScenario): string {
  const lines = [
    `variant: ${s.variant.name}; qemu-img create -f qcow2 -o ${qemuCreateOptions(s.variant.create, s.variant.backing ? 'base.qcow2' : undefined) || '(defaults)'} X ${s.sizeBytes}`,
    `image A created by ${(s.createA ?? 'strata') === 'strata' ? 'Qcow2Image.create' : 'qemu-img create'}`,
  ];
  if (s.variant.backing) lines.push(`backing file: size code ${s.backingSize ?? 0}, seed ${s.backingSeed ?? 0}`);
  const qemuFirst = s.qemuFirst ?? [];
  if (qemuFirst.length > 0) lines.push(`first, by qemu-io on B (then copied to A):\n${describeOps(qemuFirst)}`);
  const strata = `by Strata on A${s.concurrent ? ' (disjoint runs concurrently)' : ''}`;
  lines.push(`${s.modelOnly ? `${strata}, checked against the model only` : `then, ${strata} and qemu-io on B`}:\n${describeOps(s.ops)}`);
  lines.push(`as a regression test: ${JSON.stringify({ ...s, variant: undefined, variantName: s.variant.name })}`);
  return lines.join('\n');
}

export function clusterSizeOf(v: Variant): number {
  return v.create.clusterSizeBytes ?? 65536;
}

/** Runs one generated scenario end to end; throws with a readable description on any mismatch. */
export async function runScenario(s: Scenario): Promise<void> {
  await runResolved(resolveScenario(s));
}

/** Runs one concrete scenario end to end; throws with a readable description on any mismatch. */
export async function runResolved(s: ResolvedScenario): Promise<void> {
  const tmp = makeTempDir(shmBase());
  const dirs: RunDirs = {
    dir: tmp.path,
    a: path.join(tmp.path, 'a.qcow2'),
    b: path.join(tmp.path, 'b.qcow2'),
    backing: s.variant.backing ? path.join(tmp.path, 'base.qcow2') : undefined,
  };
  const cs = clusterSizeOf(s.variant);
  const qemuFirst = s.qemuFirst ?? [];
  const modelOnly = s.modelOnly ?? false;
  let ok = false;
  try {
    let backingContents: Uint8Array | undefined;
    if (dirs.backing) {
      const sizes = [s.sizeBytes, Math.max(512, Math.floor(s.sizeBytes / 3 / 512) * 512), s.sizeBytes + 5 * 65536];
      backingContents = makeBacking(dirs, s.sizeBytes, sizes[(s.backingSize ?? 0) % 3]!, s.backingSeed ?? 0);
    }
    const version = s.variant.create.compat === '0.10' ? 2 : 3;
    const model = new Model(s.sizeBytes, cs, backingContents, version);
    const opts = qemuCreateOptions(s.variant.create, dirs.backing ? 'base.qcow2' : undefined);
    const qemuCreate = (file: string) =>
      check(qemuImg(['create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), file, String(s.sizeBytes)]), 'qemu-img create');

    if (!modelOnly || qemuFirst.length > 0) qemuCreate(dirs.b);
    if (qemuFirst.length > 0) {
      applyQemu(dirs, qemuFirst, 'q', cs);
      for (const op of qemuFirst) model.apply(op);
      fs.copyFileSync(dirs.b, dirs.a);
    } else if (s.createA === 'qemu') {
      qemuCreate(dirs.a);
    } else {
      const file = await LocalHostFile.open(dirs.a, { create: true, exclusive: true });
      try {
        await Qcow2Image.create(file, {
          ...s.variant.create,
          sizeBytes: s.sizeBytes,
          ...(dirs.backing ? { backingFile: 'base.qcow2', backingFormat: 'qcow2' } : {}),
        });
      } finally {
        await file.close();
      }
    }

    await applyStrata(dirs.a, s.ops, s.concurrent ?? false);
    if (!modelOnly) applyQemu(dirs, s.ops, 's', cs);
    for (const op of s.ops) model.apply(op);

    if (modelOnly) await verifyModelOnly(dirs, model);
    else await verify(dirs, model);
    ok = true;
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- scenario ---\n${describeScenario(s)}`);
  } finally {
    if (ok || process.env.STRATA_KEEP_TMP !== '1') tmp.cleanup();
    else process.stderr.write(`kept ${tmp.path}\n`);
  }
}

/** Like verify, without image B. */
async function verifyModelOnly(dirs: RunDirs, model: Model): Promise<void> {
  const problems: string[] = [];
  const cs = model.clusterSizeBytes;
  checkImageA(problems, dirs);
  noteDifference(problems, 'QEMU read of A vs model', convertOrNote(problems, dirs.a, path.join(dirs.dir, 'a.raw')), model.current, cs);
  await strataReadback(problems, dirs, model);
  for (const [name, expected] of model.snapshots) {
    noteDifference(problems, `snapshot ${name} of A vs model`, convertOrNote(problems, dirs.a, path.join(dirs.dir, 'a-snap.raw'), name), expected, cs);
  }
  if (problems.length > 0) throw new Error(problems.join('\n'));
}

// -------------------------------------------------------------------------------------------------
// fast-check parameters

/** STRATA_PROP_RUNS scales every property's run count (e.g. 0.2 for a quick pass, 5 for a soak). */
export function runs(base: number): number {
  const scale = Number(process.env.STRATA_PROP_RUNS ?? '1');
  return Math.max(1, Math.round(base * (Number.isFinite(scale) && scale > 0 ? scale : 1)));
}

/** fast-check options: STRATA_PROP_SEED (and STRATA_PROP_PATH) replay a reported failure. */
export function fcParams(numRuns: number): fc.Parameters<unknown> {
  const params: fc.Parameters<unknown> = { numRuns, endOnFailure: false };
  if (process.env.STRATA_PROP_SEED !== undefined) params.seed = Number(process.env.STRATA_PROP_SEED);
  if (process.env.STRATA_PROP_PATH !== undefined) params.path = process.env.STRATA_PROP_PATH;
  return params;
}

// -------------------------------------------------------------------------------------------------
// Properties

export interface PropertyOptions {
  /** Generate the reverse direction: qemu-io ops first (copied to A), then more ops on both. */
  qemuFirst?: boolean;
  /** Compressed writes anywhere, compared with the model only (QEMU refuses most of them). */
  modelOnly?: boolean;
  /** Force Strata's concurrent issuing on or off (default: either, generated). */
  concurrent?: boolean;
}

export function arbScenario(variant: Variant | fc.Arbitrary<Variant>, options: PropertyOptions = {}): fc.Arbitrary<Scenario> {
  const arbVariant = variant instanceof fc.Arbitrary ? variant : fc.constant(variant);
  return arbVariant.chain((v) =>
    fc.record({
      variant: fc.constant(v),
      sizeBytes: arbSizeBytes,
      backingSize: fc.integer({ min: 0, max: 2 }),
      backingSeed: fc.nat({ max: 1_000_000 }),
      createA: fc.constantFrom<'strata' | 'qemu'>('strata', 'qemu'),
      qemuFirst: options.qemuFirst ? arbOps({ snapshots: v.snapshots, reopen: false, minLength: 3, maxLength: 20 }) : fc.constant([]),
      ops: arbOps({ snapshots: v.snapshots }),
      restrictCompressed: fc.constant(!options.modelOnly),
      modelOnly: fc.constant(options.modelOnly ?? false),
      concurrent: options.concurrent === undefined ? fc.boolean() : fc.constant(options.concurrent),
    }),
  );
}

/** fc.assert of runScenario over generated scenarios; reports the shrunk sequence on failure. */
export async function checkProperty(arb: fc.Arbitrary<Scenario>, numRuns: number): Promise<void> {
  await fc.assert(
    fc.asyncProperty(arb, async (s) => {
      await runScenario(s);
    }),
    fcParams(numRuns),
  );
}

/** Per-property vitest timeout: generous, since shrinking a failure reruns many scenarios. */
export const PROPERTY_TIMEOUT_MS = 600_000;

/**
 * Oracle helpers: build images with qemu-img / qemu-io, then check that Strata sees exactly what
 * QEMU sees. QEMU is the oracle for
 *
 *   - guest content:  `qemu-img convert -O raw` vs Strata reading the chain in 1 MiB pieces;
 *   - per-layer map:  `qemu-img map --output=json` vs Qcow2Image.mapLayer (data / zero /
 *                     unallocated, and host offsets of uncompressed data);
 *   - header facts:   `qemu-img info --output=json` vs Qcow2Image.info();
 *   - consistency:    `qemu-img check --output=json` vs Qcow2Image.check().
 *
 * Nothing here mutates an image except the qemu commands the tests run explicitly.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import type { Qcow2CheckResult, Qcow2MapExtent } from '../../formats/qcow2/index.js';
import { openImage, type OpenedImage } from '../../src/cli/img/open-image.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { expectSuccess, qemuImg, qemuIo, type RunResult } from '../support/tools.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;

/** How Strata reads the guest: the brief's 1 MiB pieces. */
export const READ_PIECE_BYTES = MiB;

// -------------------------------------------------------------------------------------------------
// Running QEMU

export function qemuImgOk(args: readonly string[]): RunResult {
  return expectSuccess(qemuImg(args), `qemu-img ${args.join(' ')}`);
}

/** One qemu-io process running every command in order (each as its own -c). */
export function qemuIoOk(image: string, commands: readonly string[], extra: readonly string[] = []): RunResult {
  const args = [...extra, ...commands.flatMap((c) => ['-c', c]), image];
  // Kept next to the image for reproducing a failure by hand (STRATA_KEEP_TMP=1 keeps the dir).
  fs.appendFileSync(`${image}.qemu-io.txt`, `${commands.join('\n')}\n`);
  const result = expectSuccess(qemuIo(args), `qemu-io on ${image}`);
  // qemu-io reports failed commands on stdout/stderr but still exits 0.
  const failure = /(failed|error|Invalid|not supported|Cannot)/i.exec(result.stdout + result.stderr);
  if (failure) throw new Error(`qemu-io command failed on ${image}: ${result.stdout}\n${result.stderr}`);
  return result;
}

export function qemuJson<T>(subcommand: string, args: readonly string[], okCodes: readonly number[] = [0]): T {
  const result = qemuImg([subcommand, '--output=json', ...args]);
  if (result.code === null || !okCodes.includes(result.code)) {
    throw new Error(`qemu-img ${subcommand} ${args.join(' ')} failed (${result.code}): ${result.stderr}`);
  }
  return JSON.parse(result.stdout) as T;
}

export interface QemuMapEntry {
  start: number;
  length: number;
  depth: number;
  present?: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

export interface QemuInfo {
  'virtual-size': number;
  'cluster-size'?: number;
  format: string;
  'dirty-flag'?: boolean;
  'backing-filename'?: string;
  'backing-filename-format'?: string;
  'format-specific'?: {
    type: string;
    data: {
      compat: string;
      'compression-type'?: string;
      'lazy-refcounts'?: boolean;
      'refcount-bits'?: number;
      corrupt?: boolean;
      'extended-l2'?: boolean;
    };
  };
  snapshots?: {
    id: string;
    name: string;
    'vm-state-size': number;
    'date-sec': number;
    'date-nsec': number;
    'vm-clock-sec': number;
    'vm-clock-nsec': number;
    icount?: number;
  }[];
}

export interface QemuCheck {
  'check-errors': number;
  corruptions?: number;
  leaks?: number;
  'image-end-offset'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
}

/** `qemu-img check`: exit 0 clean, 2 corruptions, 3 leaks (1 = check errors, which we treat as failure). */
export function qemuCheck(image: string): QemuCheck {
  return qemuJson<QemuCheck>('check', [image], [0, 2, 3]);
}

export function qemuInfo(image: string): QemuInfo {
  return qemuJson<QemuInfo>('info', [image]);
}

export function qemuMap(image: string): QemuMapEntry[] {
  return qemuJson<QemuMapEntry[]>('map', [image]);
}

// -------------------------------------------------------------------------------------------------
// Seeded data

/** Writes n seeded random bytes to file (a qemu-io `write -s` pattern, or raw source data). */
export function writeRandomFile(file: string, seed: number, n: number): string {
  const buf = Buffer.alloc(n);
  new SeededRandom(seed).fill(buf);
  fs.writeFileSync(file, buf);
  return file;
}

/**
 * Pattern files for `write -s`: qemu-io repeats a pattern file to fill its buffer, so the sizes are
 * primes that never line up with sectors or clusters.
 */
export function makePatternFiles(dir: string, seed: number): string[] {
  const sizes = [4093, 65537, 1048583];
  return sizes.map((n, i) => writeRandomFile(path.join(dir, `pattern-${seed}-${i}.bin`), seed * 31 + i, n));
}

export interface WorkloadSpec {
  sizeBytes: number;
  clusterSizeBytes: number;
  seed: number;
  patterns: readonly string[];
  /** Random operations after the fixed ones. */
  ops?: number;
  /** Use `write -z` and `write -z -u`. */
  zeroes?: boolean;
  discards?: boolean;
  /** Use `write -c` (cluster-aligned compressed writes). */
  compressed?: boolean;
}

/**
 * A seeded list of qemu-io commands: fixed writes that every image gets (the first clusters, a
 * partial cluster at an odd byte offset, a write straddling a cluster boundary, a large unaligned
 * write, the last (partial) cluster, the last sector), then random writes, zero writes, discards
 * and compressed writes at random offsets and lengths.
 */
export function workload(spec: WorkloadSpec): string[] {
  const r = new SeededRandom(spec.seed);
  const S = spec.sizeBytes;
  const C = spec.clusterSizeBytes;
  const clusters = Math.ceil(S / C);
  const cmds: string[] = [];
  const clip = (off: number, len: number): [number, number] => {
    const o = Math.max(0, Math.min(off, S - 1));
    return [o, Math.max(1, Math.min(len, S - o))];
  };
  // Clusters some command has touched (compressed writes go only where nothing has been yet).
  const touched = new Set<number>();
  const touch = (o: number, l: number) => {
    for (let k = Math.floor(o / C); k <= Math.floor((o + l - 1) / C); k++) touched.add(k);
  };
  const data = (off: number, len: number) => {
    const [o, l] = clip(off, len);
    touch(o, l);
    if (r.bool(0.4)) cmds.push(`write -q -P ${r.intBetween(1, 255)} ${o} ${l}`);
    else cmds.push(`write -q -s ${r.pick(spec.patterns)} ${o} ${l}`);
  };
  const maxLen = Math.min(4 * C, 768 * KiB);
  const randomLength = () => {
    switch (r.int(3)) {
      case 0:
        return r.intBetween(1, Math.min(C, 8 * KiB));
      case 1:
        return r.intBetween(C, Math.max(C, maxLen));
      default:
        return r.intBetween(1, maxLen);
    }
  };

  const tail = S % C;
  const lastStart = tail === 0 ? S - C : S - tail;
  // Compressed writes come first, into clusters nothing has touched. qemu refuses to compress into
  // an allocated cluster (EIO), and QEMU 7.2 corrupts images when it compresses after a cluster
  // holding compressed data was freed and reused (it keeps appending at its old compressed-tail
  // offset, inside what is now someone else's cluster); with every compressed write first, nothing
  // has been freed yet. The later writes then overwrite parts of compressed clusters.
  if (spec.compressed) {
    // The last (possibly partial) cluster, which qemu pads.
    cmds.push(`write -q -c -P ${r.intBetween(1, 255)} ${lastStart} ${S - lastStart}`);
    touch(lastStart, S - lastStart);
    for (let i = 0; i < 6; i++) {
      let first = r.int(clusters);
      while (first < clusters && touched.has(first)) first++;
      if (first >= clusters) continue;
      const want = r.intBetween(1, Math.max(1, Math.min(4, Math.floor((2 * MiB) / C))));
      let n = 1;
      while (n < want && first + n < clusters && !touched.has(first + n)) n++;
      const start = first * C;
      const len = Math.min(n * C, S - start);
      const src = r.bool(0.5) ? `-P ${r.intBetween(1, 255)}` : `-s ${r.pick(spec.patterns)}`;
      cmds.push(`write -q -c ${src} ${start} ${len}`);
      touch(start, len);
    }
  }

  // Fixed shapes.
  data(0, Math.min(S, 2 * C));
  data(Math.min(3, clusters - 1) * C + r.intBetween(1, C - 1), r.intBetween(1, Math.max(1, Math.min(C, 5000))));
  data(Math.min(6, clusters - 1) * C - r.intBetween(1, Math.min(C, 4096)), r.intBetween(2, 2 * Math.min(C, 4096)));
  data(r.int(Math.max(1, S - MiB)) + 1, MiB);
  data(lastStart + r.int(Math.max(1, Math.floor((S - lastStart) / 2))), S);
  data(S - 512, 512);

  const ops = spec.ops ?? 16;
  for (let i = 0; i < ops; i++) {
    const roll = r.next();
    const off = r.int(clusters) * C + (r.bool(0.5) ? 0 : r.int(C));
    if (spec.zeroes && roll < 0.2) {
      const [o, l] = clip(off, randomLength());
      cmds.push(`write -q -z ${r.bool(0.5) ? '-u ' : ''}${o} ${l}`);
      touch(o, l);
    } else if (spec.discards && roll < 0.35) {
      const [o, l] = clip(off, randomLength());
      cmds.push(`discard -q ${o} ${l}`);
      touch(o, l);
    } else {
      data(off, randomLength());
    }
  }
  return cmds;
}

/**
 * Seeded raw content for `qemu-img convert -c`: a mix of zero runs, single-byte runs, short repeats
 * (compressible) and random bytes (not compressible), in pieces of irregular length.
 */
export function writeMixedRawFile(file: string, seed: number, sizeBytes: number): string {
  const r = new SeededRandom(seed);
  const buf = Buffer.alloc(sizeBytes);
  for (let pos = 0; pos < sizeBytes; ) {
    const len = Math.min(sizeBytes - pos, r.intBetween(512, 300 * KiB));
    const piece = buf.subarray(pos, pos + len);
    switch (r.int(4)) {
      case 0:
        break; // zeroes
      case 1:
        piece.fill(r.intBetween(1, 255));
        break;
      case 2: {
        const unit = Buffer.alloc(r.intBetween(3, 300));
        r.fill(unit);
        for (let i = 0; i < len; i += unit.length) unit.copy(piece, i);
        break;
      }
      default:
        r.fill(piece);
    }
    pos += len;
  }
  fs.writeFileSync(file, buf);
  return file;
}

// -------------------------------------------------------------------------------------------------
// Comparing bytes

export function sha256(buf: Uint8Array): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Fails with the first differing offset and the number of differing 512-byte sectors. */
export function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length === expected.length && Buffer.from(actual.buffer, actual.byteOffset, actual.length).equals(expected)) {
    return;
  }
  let first = -1;
  let sectors = 0;
  const n = Math.min(actual.length, expected.length);
  for (let s = 0; s < n; s += 512) {
    const a = Buffer.from(actual.buffer, actual.byteOffset + s, Math.min(512, n - s));
    const b = Buffer.from(expected.buffer, expected.byteOffset + s, Math.min(512, n - s));
    if (!a.equals(b)) {
      sectors++;
      if (first < 0) for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) { first = s + i; break; }
    }
  }
  const detail =
    `${what}: content differs (strata ${actual.length} bytes sha256 ${sha256(actual).slice(0, 16)}, ` +
    `qemu ${expected.length} bytes sha256 ${sha256(expected).slice(0, 16)}); ` +
    `first difference at byte ${first} (strata ${first >= 0 ? actual[first] : '-'}, qemu ${first >= 0 ? expected[first] : '-'}), ` +
    `${sectors} differing sectors`;
  expect.fail(detail);
}

// -------------------------------------------------------------------------------------------------
// Reading with Strata

export function qemuRaw(image: string, out: string): Buffer {
  qemuImgOk(['convert', '-O', 'raw', image, out]);
  return fs.readFileSync(out);
}

/** Opens the chain read-only with Strata's own opener (the CLI's). */
export function openChain(image: string): Promise<OpenedImage> {
  return openImage(image, { readOnly: true });
}

/** Strata reads the whole guest of an opened chain in pieces of pieceBytes into a raw file. */
export async function strataRawFile(opened: OpenedImage, out: string, pieceBytes = READ_PIECE_BYTES): Promise<Buffer> {
  const size = opened.image.sizeBytes;
  const fd = fs.openSync(out, 'w');
  try {
    const buf = Buffer.alloc(pieceBytes);
    for (let pos = 0; pos < size; pos += pieceBytes) {
      const len = Math.min(pieceBytes, size - pos);
      const piece = buf.subarray(0, len);
      piece.fill(0xa5); // anything not written by read() shows up as a difference
      await opened.image.read(pos, piece);
      fs.writeSync(fd, piece, 0, len, pos);
    }
  } finally {
    fs.closeSync(fd);
  }
  return fs.readFileSync(out);
}

/**
 * Reads the guest again in irregular seeded pieces (odd sizes and offsets) from a fresh open of
 * image with a tiny L2 cache, so table eviction and partial-cluster reads are exercised too.
 */
export async function strataReadIrregular(image: string, seed: number, expected: Buffer): Promise<void> {
  const file = await LocalHostFile.open(image, { readOnly: true });
  const q = await Qcow2Image.open(file, { readOnly: true, l2CacheBytes: 1, refcountCacheBytes: 1 });
  try {
    const r = new SeededRandom(seed);
    const got = Buffer.alloc(q.sizeBytes, 0xa5);
    for (let pos = 0; pos < q.sizeBytes; ) {
      const len = Math.min(q.sizeBytes - pos, r.pick([1, 511, 4097, 65535, 200_003, 1_048_577, 3_000_001]));
      await q.read(pos, got.subarray(pos, pos + len));
      pos += len;
    }
    expectSameBytes(got, expected, `${path.basename(image)} (irregular reads, small cache)`);
  } finally {
    await q.close();
  }
}

// -------------------------------------------------------------------------------------------------
// Maps

type Kind = Qcow2MapExtent['kind'];

interface Segment {
  start: number;
  end: number;
  kind: Kind;
  /** Host offset at `start` for uncompressed data, when known. */
  host?: number;
}

/**
 * qemu-img map describes the whole chain; this layer's view is: entries from a deeper layer
 * (depth > 0) or not present are unallocated here; present entries with data are data; present
 * entries without data are zero. qemu may also set zero=true on data it found to be a hole in the
 * host file; that is a property of the host file, not of the qcow2 metadata, so it is ignored.
 */
export function qemuLayerSegments(entries: readonly QemuMapEntry[]): Segment[] {
  return entries.map((e) => {
    const present = e.present ?? (e.data || e.zero);
    const kind: Kind = e.depth > 0 || !present ? 'unallocated' : e.data ? 'data' : 'zero';
    const seg: Segment = { start: e.start, end: e.start + e.length, kind };
    if (kind === 'data' && e.offset !== undefined) seg.host = e.offset;
    return seg;
  });
}

export function strataSegments(extents: readonly Qcow2MapExtent[]): Segment[] {
  return extents.map((e) => {
    const seg: Segment = { start: e.guestOffset, end: e.guestOffset + e.lengthBytes, kind: e.kind };
    if (e.kind === 'data' && !e.compressed && e.hostOffset !== undefined) seg.host = e.hostOffset;
    return seg;
  });
}

function fmtSeg(s: { start: number; end: number; kind: Kind; host?: number | undefined }): string {
  return `[${s.start}, ${s.end}) ${s.kind}${s.host !== undefined ? ` @${s.host}` : ''}`;
}

/**
 * Compares two maps range by range: same kind everywhere, and for uncompressed data the same host
 * offset (qemu gives none for compressed clusters; Strata marks them compressed).
 */
export function compareMaps(strata: readonly Segment[], qemu: readonly Segment[], sizeBytes: number, what: string): void {
  const problems: string[] = [];
  const cover = (segs: readonly Segment[], who: string) => {
    let at = 0;
    for (const s of segs) {
      if (s.start !== at) problems.push(`${who} map has a gap or overlap at ${at} (next starts at ${s.start})`);
      at = s.end;
    }
    if (at !== sizeBytes) problems.push(`${who} map ends at ${at}, not at the virtual size ${sizeBytes}`);
  };
  cover(strata, 'strata');
  cover(qemu, 'qemu');
  let i = 0;
  let j = 0;
  let pos = 0;
  const mismatches: string[] = [];
  while (i < strata.length && j < qemu.length && pos < sizeBytes) {
    const a = strata[i]!;
    const b = qemu[j]!;
    const end = Math.min(a.end, b.end);
    const ha = a.host === undefined ? undefined : a.host + (pos - a.start);
    const hb = b.host === undefined ? undefined : b.host + (pos - b.start);
    const hostDiffers = ha !== undefined && hb !== undefined && ha !== hb;
    const hostMissing = a.kind === 'data' && b.kind === 'data' && (ha === undefined) !== (hb === undefined);
    if (a.kind !== b.kind || hostDiffers || hostMissing) {
      const last = mismatches[mismatches.length - 1];
      const line = `[${pos}, ${end}): strata ${a.kind}${ha !== undefined ? ` @${ha}` : ''}, qemu ${b.kind}${hb !== undefined ? ` @${hb}` : ''}`;
      if (mismatches.length < 12 || !last) mismatches.push(line);
    }
    pos = end;
    if (a.end === end) i++;
    if (b.end === end) j++;
  }
  problems.push(...mismatches);
  if (problems.length > 0) {
    expect.fail(
      `${what}: map differs from qemu-img map\n  ${problems.join('\n  ')}\n` +
        `strata:\n  ${strata.slice(0, 40).map(fmtSeg).join('\n  ')}\nqemu:\n  ${qemu.slice(0, 40).map(fmtSeg).join('\n  ')}`,
    );
  }
}

// -------------------------------------------------------------------------------------------------
// Info and check

export function compareInfo(q: Qcow2Image, qi: QemuInfo, what: string): void {
  const info = q.info();
  const fsd = qi['format-specific']?.data;
  expect(qi.format, what).toBe('qcow2');
  expect(info.virtualSizeBytes, `${what}: virtual-size`).toBe(qi['virtual-size']);
  expect(q.sizeBytes, `${what}: sizeBytes`).toBe(qi['virtual-size']);
  expect(info.clusterSizeBytes, `${what}: cluster-size`).toBe(qi['cluster-size']);
  expect(info.dirty, `${what}: dirty-flag`).toBe(qi['dirty-flag'] ?? false);
  expect(fsd, `${what}: format-specific`).toBeDefined();
  const mine: Record<string, unknown> = {
    compat: info.compat,
    'compression-type': info.compressionType,
    'refcount-bits': info.refcountBits,
  };
  if (info.version === 3) {
    mine['lazy-refcounts'] = info.lazyRefcounts;
    mine.corrupt = info.corrupt;
    mine['extended-l2'] = info.extendedL2;
  }
  const theirs: Record<string, unknown> = {};
  for (const key of Object.keys(mine)) theirs[key] = (fsd as Record<string, unknown> | undefined)?.[key];
  expect(mine, `${what}: format-specific data`).toEqual(theirs);
  expect(info.backingFile, `${what}: backing-filename`).toBe(qi['backing-filename']);
  expect(info.backingFormat, `${what}: backing-filename-format`).toBe(qi['backing-filename-format']);
  const snaps = info.snapshots.map((s) => ({
    id: s.id,
    name: s.name,
    'vm-state-size': s.vmStateSizeBytes,
    'date-sec': s.dateSec,
    'date-nsec': s.dateNsec,
    'vm-clock-ns': s.vmClockNsec,
    icount: s.icount ?? 0,
  }));
  const qsnaps = (qi.snapshots ?? []).map((s) => ({
    id: s.id,
    name: s.name,
    'vm-state-size': s['vm-state-size'],
    'date-sec': s['date-sec'],
    'date-nsec': s['date-nsec'],
    'vm-clock-ns': s['vm-clock-sec'] * 1e9 + s['vm-clock-nsec'],
    icount: s.icount ?? 0,
  }));
  expect(snaps, `${what}: snapshots`).toEqual(qsnaps);
}

/** The numbers both checkers report, qemu's absent fields counting as 0. */
export function checkSummary(c: Qcow2CheckResult | QemuCheck): Record<string, number> {
  if ('checkErrors' in c) {
    return {
      corruptions: c.corruptions,
      leaks: c.leaks,
      'check-errors': c.checkErrors,
      'allocated-clusters': c.allocatedClusters,
      'total-clusters': c.totalClusters,
      'compressed-clusters': c.compressedClusters,
      'fragmented-clusters': c.fragmentedClusters,
      'image-end-offset': c.imageEndOffset,
    };
  }
  return {
    corruptions: c.corruptions ?? 0,
    leaks: c.leaks ?? 0,
    'check-errors': c['check-errors'],
    'allocated-clusters': c['allocated-clusters'] ?? 0,
    'total-clusters': c['total-clusters'] ?? 0,
    'compressed-clusters': c['compressed-clusters'] ?? 0,
    'fragmented-clusters': c['fragmented-clusters'] ?? 0,
    'image-end-offset': c['image-end-offset'] ?? 0,
  };
}

export function compareCheck(mine: Qcow2CheckResult, theirs: QemuCheck, what: string): void {
  const a = checkSummary(mine);
  const b = checkSummary(theirs);
  expect(
    { corruptions: a.corruptions, leaks: a.leaks },
    `${what}: check problems (strata messages: ${mine.messages.slice(0, 8).join('; ')})`,
  ).toEqual({ corruptions: b.corruptions, leaks: b.leaks });
  expect(a, `${what}: check statistics`).toEqual(b);
}

// -------------------------------------------------------------------------------------------------
// The whole comparison for one image (and every qcow2 layer under it)

export interface VerifyOptions {
  /** Scratch directory for the raw files. */
  dir: string;
  /** Also read again with irregular pieces and a tiny cache (images without a backing file). */
  irregularSeed?: number;
  /** Expect qemu-img check to find nothing (default true). */
  expectClean?: boolean;
}

export interface LayerSummary {
  depth: number;
  /** Kinds of range qemu and Strata agreed this layer has ('data', 'zero', 'unallocated'). */
  kinds: Set<Qcow2MapExtent['kind']>;
  /** Strata found compressed clusters in this layer. */
  compressed: boolean;
}

export interface Verified {
  /** The guest content (qemu's, equal to Strata's). */
  content: Buffer;
  /** One per qcow2 layer, top first, so tests can assert the workload made what they meant. */
  layers: LayerSummary[];
}

/**
 * Content, map, info and check of `image` against QEMU. Every qcow2 layer of the chain gets its own
 * map, info and check comparison (qemu-img run on that layer's file).
 */
export async function verifyImage(image: string, options: VerifyOptions): Promise<Verified> {
  const tag = path.basename(image);
  const expected = qemuRaw(image, path.join(options.dir, `${tag}.qemu.raw`));
  const opened = await openChain(image);
  const layers: LayerSummary[] = [];
  try {
    const actual = await strataRawFile(opened, path.join(options.dir, `${tag}.strata.raw`));
    expectSameBytes(actual, expected, tag);
    expect(sha256(actual), `${tag}: sha256`).toBe(sha256(expected));

    for (const layer of opened.layers) {
      if (!(layer.image instanceof Qcow2Image)) continue;
      const q = layer.image;
      const what = `${tag} layer ${layer.depth} (${path.basename(layer.path)})`;
      const qi = qemuInfo(layer.path);
      compareInfo(q, qi, what);
      const strataMap = await q.mapLayer(0, q.sizeBytes);
      compareMaps(strataSegments(strataMap), qemuLayerSegments(qemuMap(layer.path)), q.sizeBytes, what);
      layers.push({
        depth: layer.depth,
        kinds: new Set(strataMap.map((e) => e.kind)),
        compressed: strataMap.some((e) => e.compressed === true),
      });
      const qc = qemuCheck(layer.path);
      if (options.expectClean ?? true) {
        expect(checkSummary(qc), `${what}: qemu-img check is clean`).toMatchObject({ corruptions: 0, leaks: 0 });
      }
      compareCheck(await q.check(), qc, what);
    }
  } finally {
    await opened.close();
  }
  if (options.irregularSeed !== undefined) await strataReadIrregular(image, options.irregularSeed, expected);
  return { content: expected, layers };
}

/** Size helpers: a virtual size that is not a multiple of the cluster size (qemu rounds to 512). */
export function oddSize(baseBytes: number, clusterSizeBytes: number): number {
  return clusterSizeBytes > 512 ? baseBytes + clusterSizeBytes / 2 + 512 : baseBytes;
}

export function createOpts(opts: Record<string, string | number | boolean | undefined>): string {
  return Object.entries(opts)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v === true ? 'on' : v === false ? 'off' : v}`)
    .join(',');
}

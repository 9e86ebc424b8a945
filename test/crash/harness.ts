/**
 * The crash-test harness: run a workload on a FaultInjectingFile, take crash images at random host
 * operations (or cut the power with failAfterOps), and judge each crash image:
 *
 *   (a) Strata opens it, read-only and writable (a writable open repairs a dirty image);
 *   (b) check() on the read-only open finds no corruption, unless the dirty bit is set, in which
 *       case check() after the writable open's repair must be entirely clean;
 *   (c) every byte reads back as of the last completed flush, or as written since (never garbage
 *       and never another offset's data), on both opens;
 *   (d) optionally, qemu-img check agrees (exit 0 or 3; 2 only with the dirty bit);
 *   (e) optionally, new writes after the crash allocate without overwriting anything live.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { StorageError, isStorageError } from '../../src/core/errors.js';
import type { HostFile } from '../../src/core/host-file.js';
import { FaultInjectingFile } from '../../src/store/fault-injecting-file.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { Qcow2Image, type Qcow2OpenOptions } from '../../formats/qcow2/index.js';
import { qemuImg } from '../support/tools.js';
import { GuestModel, findViolations, type Expectation, type Layer } from './model.js';
import { describeOp, generateWorkload, type Variant, type WorkloadOp } from './workload.js';

export const BACKING_NAME = 'backing.qcow2';

/** A FaultInjectingFile that tells a listener before each host mutation (write, truncate, punch, flush). */
export class CrashPointFile extends FaultInjectingFile {
  beforeMutation: ((what: string) => void) | undefined;

  override pwrite(buf: Uint8Array, hostOffset: number): Promise<void> {
    this.beforeMutation?.(`pwrite ${buf.length}@${hostOffset}`);
    return super.pwrite(buf, hostOffset);
  }

  override truncate(sizeBytes: number): Promise<void> {
    this.beforeMutation?.(`truncate ${sizeBytes}`);
    return super.truncate(sizeBytes);
  }

  override punchHole(hostOffset: number, lengthBytes: number): Promise<void> {
    this.beforeMutation?.(`punchHole ${lengthBytes}@${hostOffset}`);
    return super.punchHole(hostOffset, lengthBytes);
  }

  override flush(): Promise<void> {
    this.beforeMutation?.('flush');
    return super.flush();
  }
}

export interface Backing {
  file: MemoryHostFile;
  /** Guest-visible contents of the backing image, padded with zeroes to the overlay's size. */
  content: Uint8Array;
}

export interface Scenario {
  variant: Variant;
  seed: number;
  backing: Backing | undefined;
  /** The freshly created image (empty, or prefilled), durable. */
  base: MemoryHostFile;
  /** What the guest reads from it: backing file contents and prefilled data. */
  initialContent: Uint8Array;
  ops: WorkloadOp[];
}

const KiB = 1024;

async function makeBacking(variant: Variant, seed: number): Promise<Backing | undefined> {
  if (variant.backingSizeBytes === undefined) return undefined;
  const rng = new SeededRandom(seed ^ 0x5bd1e995);
  const file = new MemoryHostFile(undefined, { name: BACKING_NAME });
  await Qcow2Image.create(file, { sizeBytes: variant.backingSizeBytes, clusterSizeBytes: 64 * KiB });
  const image = await Qcow2Image.open(file);
  const content = new Uint8Array(variant.create.sizeBytes);
  // Mostly data; some holes, so unallocated backing ranges read as zeroes too.
  for (let offset = 0; offset < variant.backingSizeBytes; offset += 32 * KiB) {
    if (rng.bool(0.2)) continue;
    const data = rng.fill(new Uint8Array(Math.min(32 * KiB, variant.backingSizeBytes - offset)));
    await image.write(offset, data);
    content.set(data, offset);
  }
  await image.close();
  return { file, content };
}

export async function prepareScenario(variant: Variant, seed: number): Promise<Scenario> {
  const backing = await makeBacking(variant, seed);
  const base = new MemoryHostFile(undefined, { name: 'crash.qcow2' });
  await Qcow2Image.create(base, {
    ...variant.create,
    ...(backing ? { backingFile: BACKING_NAME, backingFormat: 'qcow2' } : {}),
  });
  const initialContent = backing ? backing.content.slice() : new Uint8Array(variant.create.sizeBytes);
  if (variant.prefillBytes) {
    // Data written (durably) before the workload, so that it crosses a refcount boundary early.
    const image = await Qcow2Image.open(base, openOptions({ backing }));
    const data = new SeededRandom(seed ^ 0x1b873593).fill(new Uint8Array(variant.prefillBytes));
    await image.write(0, data);
    await image.close();
    initialContent.set(data, 0);
  }
  return { variant, seed, backing, base, initialContent, ops: generateWorkload(variant, seed) };
}

export function openOptions(scenario: Pick<Scenario, 'backing'>, options: Qcow2OpenOptions = {}): Qcow2OpenOptions {
  const backing = scenario.backing;
  if (!backing) return options;
  return {
    ...options,
    openBacking: async (ref) => {
      if (ref.fileName !== BACKING_NAME) throw new StorageError('NOT_FOUND', `unexpected backing file ${ref.fileName}`);
      return Qcow2Image.open(backing.file.readOnlyView(), { readOnly: true });
    },
  };
}

/** The guest range and contents an operation leaves, as the engine documents it. */
function layerFor(scenario: Scenario, op: WorkloadOp, opIndex: number): Layer | undefined {
  const v = scenario.variant;
  const cs = v.create.clusterSizeBytes ?? 64 * KiB;
  const size = v.create.sizeBytes;
  switch (op.kind) {
    case 'write':
    case 'writeCompressed':
      return { opIndex, guestOffset: op.guestOffset, lengthBytes: op.data.length, content: op.data };
    case 'writeZeroes':
      return { opIndex, guestOffset: op.guestOffset, lengthBytes: op.lengthBytes, content: 'zero' };
    case 'discard': {
      // Whole clusters only (the partial last cluster of the image counts as whole); they read as
      // zeroes. A v2 image with a backing file ignores discards (no zero flag: the clusters could
      // only fall back to the backing file's stale data), as QEMU does.
      const end = op.guestOffset + op.lengthBytes;
      const start = Math.ceil(op.guestOffset / cs) * cs;
      const alignedEnd = end === size ? end : Math.floor(end / cs) * cs;
      if (start >= alignedEnd) return undefined;
      if (v.create.compat === '0.10' && scenario.backing) return undefined;
      return { opIndex, guestOffset: start, lengthBytes: alignedEnd - start, content: 'zero' };
    }
    default:
      return undefined;
  }
}

async function issue(image: Qcow2Image, op: WorkloadOp): Promise<void> {
  switch (op.kind) {
    case 'write':
      return image.write(op.guestOffset, op.data);
    case 'writeZeroes':
      return image.writeZeroes(op.guestOffset, op.lengthBytes, { mayUnmap: op.mayUnmap });
    case 'discard':
      return image.discard(op.guestOffset, op.lengthBytes);
    case 'writeCompressed':
      return image.writeCompressed(op.guestOffset, op.data);
    case 'flush':
      return image.flush();
    case 'createSnapshot':
      await image.createSnapshot(op.name);
      return;
    case 'deleteSnapshot':
      return image.deleteSnapshot(op.name);
  }
}

export interface Capture {
  image: MemoryHostFile;
  exp: Expectation;
  /** Where the crash happened, for messages. */
  where: string;
  /** The crash hit an internal snapshot create/delete (see verifyCrashImage for v2 images). */
  inSnapshotOp: boolean;
}

export interface RunResult {
  /** Host operations the workload made (its file's operation count). */
  hostOps: number;
  /** Index of the workload op during which the power was cut (failAfterOps runs). */
  cutAtOp: number | undefined;
  model: GuestModel;
  file: CrashPointFile;
  image: Qcow2Image | undefined;
}

export interface RunOptions {
  failAfterOps?: number;
  /** Called before each host mutation with the workload op in progress. */
  onHostOp?: (file: CrashPointFile, model: GuestModel, opIndex: number, what: string) => void;
  /** Called after each workload op completes (a safe point to verify captures). */
  afterOp?: (opIndex: number) => Promise<void>;
}

/**
 * Runs the scenario's workload. With failAfterOps, the run stops at the injected I/O error (any
 * other failure is a test failure); the model then still holds the interrupted op as a layer.
 */
export async function runWorkload(scenario: Scenario, options: RunOptions = {}): Promise<RunResult> {
  const model = new GuestModel(scenario.initialContent);
  const file = new CrashPointFile(scenario.base, { name: 'crash.qcow2', failAfterOps: options.failAfterOps });
  const image = await Qcow2Image.open(file, openOptions(scenario));
  let current = -1;
  if (options.onHostOp) {
    const hook = options.onHostOp;
    file.beforeMutation = (what) => hook(file, model, current, what);
  }
  for (let i = 0; i < scenario.ops.length; i++) {
    const op = scenario.ops[i]!;
    current = i;
    const layer = layerFor(scenario, op, i);
    if (layer) model.apply(layer);
    try {
      await issue(image, op);
    } catch (err) {
      if (file.poweredOff && isStorageError(err)) {
        file.beforeMutation = undefined;
        return { hostOps: file.operationCount, cutAtOp: i, model, file, image };
      }
      throw new Error(`seed ${scenario.seed}: op ${i} ${describeOp(op)} failed: ${String(err)}`, { cause: err });
    }
    if (op.kind === 'flush') model.flushed();
    await options.afterOp?.(i);
  }
  file.beforeMutation = undefined;
  return { hostOps: file.operationCount, cutAtOp: undefined, model, file, image };
}

/** Reads the whole guest. */
export async function readAll(image: Qcow2Image): Promise<Uint8Array> {
  const out = new Uint8Array(image.sizeBytes);
  const step = 512 * KiB;
  for (let offset = 0; offset < out.length; offset += step) {
    await image.read(offset, out.subarray(offset, Math.min(out.length, offset + step)));
  }
  return out;
}

export interface VerifyOptions {
  /** Also run qemu-img check on this crash image (needs a directory for the files). */
  qemuDir?: string;
  /** Write to the image after the crash and check that nothing live was overwritten. */
  postCrashWrites?: SeededRandom;
}

export interface VerifyStats {
  dirty: boolean;
  leaks: number;
  repaired: boolean;
  /** v2 image, crash inside a snapshot operation, COPIED flags out of step (see below). */
  v2CopiedOnly: boolean;
  qemuExit?: number | null;
}

const errorsOf = (messages: string[]) => messages.filter((m) => m.startsWith('ERROR'));
const copiedOnly = (messages: string[]) => errorsOf(messages).every((m) => m.startsWith('ERROR OFLAG_COPIED'));

/**
 * Judges one crash image. Returns problems as strings (empty: the image passed) and statistics.
 * Never throws for a problem with the image; an unexpected exception becomes a problem.
 */
export async function verifyCrashImage(
  scenario: Scenario,
  capture: Capture,
  options: VerifyOptions = {},
): Promise<{ problems: string[]; stats: VerifyStats }> {
  const problems: string[] = [];
  const stats: VerifyStats = { dirty: false, leaks: 0, repaired: false, v2CopiedOnly: false };
  const v2 = scenario.variant.create.compat === '0.10';
  const where = `${scenario.variant.name}, seed ${scenario.seed}, ${capture.where}`;
  const fail = (what: string) => problems.push(`[${where}] ${what}`);

  // (a) read-only open, (b) check, (c) contents.
  let ro: Qcow2Image;
  try {
    ro = await Qcow2Image.open(capture.image.readOnlyView(), openOptions(scenario, { readOnly: true, dirtyPolicy: 'ignore' }));
  } catch (err) {
    fail(`read-only open failed: ${String(err)}`);
    return { problems, stats };
  }
  try {
    const info = ro.info();
    stats.dirty = info.dirty;
    if (info.corrupt) fail('the corrupt bit is set');
    const check = await ro.check();
    stats.leaks = check.leaks;
    // A v2 image has no dirty bit, so a snapshot create/delete, which changes refcounts and COPIED
    // flags across whole trees, has a window where the two disagree on disk whatever the write
    // order (QEMU's too): refcounts raised before COPIED is cleared, or lowered before it is set.
    // Both are harmless (an in-place write to a cluster whose extra refcount is a leak, or an
    // unneeded copy-on-write); qemu-img check calls them corruptions. Allowed there, and only
    // there, as long as a full repair then leaves the image clean (checked below).
    stats.v2CopiedOnly = v2 && capture.inSnapshotOp && check.corruptions > 0 && copiedOnly(check.messages);
    if (check.corruptions > 0 && !info.dirty && !stats.v2CopiedOnly) {
      fail(`check() found ${check.corruptions} corruptions (dirty bit clear): ${errorsOf(check.messages).slice(0, 4).join('; ')}`);
    }
    if (check.checkErrors > 0) fail(`check() had ${check.checkErrors} check errors`);
    const content = await readAll(ro);
    for (const v of findViolations(capture.exp, 0, content)) fail(`read-only open: ${v}`);
  } catch (err) {
    fail(`read-only open: ${String(err)}${err instanceof Error && !isStorageError(err) ? `\n${err.stack}` : ''}`);
  } finally {
    await ro.close().catch(() => undefined);
  }

  // (d) qemu-img check on the bytes as they are.
  if (options.qemuDir) {
    const imagePath = path.join(options.qemuDir, 'crash.qcow2');
    writeFileSync(imagePath, capture.image.snapshotBytes());
    if (scenario.backing) writeFileSync(path.join(options.qemuDir, BACKING_NAME), scenario.backing.file.snapshotBytes());
    const result = qemuImg(['check', '-f', 'qcow2', '--output=json', imagePath]);
    stats.qemuExit = result.code;
    const okCodes = stats.dirty || stats.v2CopiedOnly ? [0, 2, 3] : [0, 3];
    if (result.code === null || !okCodes.includes(result.code)) {
      fail(`qemu-img check exited ${result.code}: ${result.stdout.slice(0, 600)} ${result.stderr.slice(0, 300)}`);
    }
  }

  // Writable open: repairs a dirty image. Work on a copy: the capture stays as it was.
  const writableFile = capture.image.clone({ name: 'crash.qcow2' });
  let rw: Qcow2Image | undefined;
  try {
    rw = await Qcow2Image.open(writableFile, openOptions(scenario));
    stats.repaired = stats.dirty;
    let check = await rw.check();
    if (stats.v2CopiedOnly && check.corruptions > 0 && copiedOnly(check.messages)) {
      await rw.check('all');
      check = await rw.check();
      if (check.corruptions > 0 || check.leaks > 0) fail(`check -r all left ${check.corruptions} corruptions, ${check.leaks} leaks`);
    }
    if (check.corruptions > 0) {
      fail(`check() after writable open found ${check.corruptions} corruptions: ${errorsOf(check.messages).slice(0, 4).join('; ')}`);
    }
    if (stats.dirty && check.leaks > 0) fail(`check() after repairing a dirty image found ${check.leaks} leaks`);
    if (rw.info().dirty && !rw.lazyRefcounts) fail('the dirty bit is still set after the writable open');
    const content = await readAll(rw);
    for (const v of findViolations(capture.exp, 0, content)) fail(`after writable open: ${v}`);

    // (e) New allocations after the crash must not land on anything live.
    if (options.postCrashWrites && problems.length === 0) {
      const rng = options.postCrashWrites;
      const size = rw.sizeBytes;
      const cs = rw.clusterSizeBytes;
      const expected = content;
      for (let n = 0; n < 6; n++) {
        const kind = rng.int(4);
        if (kind === 3) {
          const guestOffset = rng.int(Math.ceil(size / cs)) * cs;
          const length = Math.min(cs, size - guestOffset);
          const data = new Uint8Array(length).fill(0x40 + n);
          await rw.writeCompressed(guestOffset, data);
          expected.set(data, guestOffset);
        } else {
          const guestOffset = rng.int(size);
          const length = Math.min(size - guestOffset, rng.intBetween(1, 3 * cs));
          const data = rng.fill(new Uint8Array(length));
          await rw.write(guestOffset, data);
          expected.set(data, guestOffset);
        }
      }
      await rw.flush();
      await rw.close();
      rw = undefined;
      const again = await Qcow2Image.open(writableFile.readOnlyView(), openOptions(scenario, { readOnly: true, dirtyPolicy: 'ignore' }));
      try {
        const check2 = await again.check();
        if (check2.corruptions > 0) {
          fail(`check() after post-crash writes found ${check2.corruptions} corruptions: ${errorsOf(check2.messages).slice(0, 4).join('; ')}`);
        }
        const after = await readAll(again);
        const exact: Expectation = { durable: expected, layers: [], latest: expected };
        for (const v of findViolations(exact, 0, after)) fail(`after post-crash writes: ${v}`);
      } finally {
        await again.close();
      }
    }
  } catch (err) {
    fail(`writable open: ${String(err)}${err instanceof Error && !isStorageError(err) ? `\n${err.stack}` : ''}`);
  } finally {
    await rw?.close().catch(() => undefined);
  }
  return { problems, stats };
}

/** Lists a scenario's ops up to (and including) one index, for reproduction messages. */
export function opListing(scenario: Scenario, upTo = scenario.ops.length - 1): string {
  return scenario.ops
    .slice(0, upTo + 1)
    .map((op, i) => `  ${i}: ${describeOp(op)}`)
    .join('\n');
}

export type { HostFile };

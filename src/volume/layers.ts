/**
 * Layer files: where they live, how they are created and how a chain of them is opened.
 *
 * Every layer of a pool is `<data>/pools/<pool>/<layerId>.qcow2`; a layer's backing file name is
 * relative to its own folder ("<id>.qcow2" in the same pool, "../<pool>/<id>.qcow2" across pools),
 * so `qemu-img info --backing-chain` on any layer file shows its chain. The catalog is the truth
 * about chains: opening checks that each header names exactly the backing layer the catalog says.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { StorageError } from '../core/errors.js';
import type { HostFile } from '../core/host-file.js';
import type { BackingRef, Image } from '../core/image.js';
import { LocalHostFile } from '../store/local-file.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import type { FileRef, LayerRecord } from '../catalog/records.js';

export const LAYER_SUFFIX = '.qcow2';
/** Temporary files in a pool folder (spooled imports, exports being converted): never referenced. */
export const TEMP_PREFIX = '.tmp-';
/** Layer file names Strata creates: 16 hex digits. Anything else in a pool folder is not ours. */
export const LAYER_FILE_PATTERN = /^[0-9a-f]{16}\.qcow2$/;
export const LAYER_CLUSTER_BYTES = 64 * 1024;

export function layerFileName(layerId: string): string {
  return `${layerId}${LAYER_SUFFIX}`;
}

/** The backing file name `child`'s header stores for `backing`. */
export function backingFileName(child: Pick<LayerRecord, 'pool'>, backing: Pick<LayerRecord, 'pool' | 'fileName'>): string {
  return child.pool === backing.pool ? backing.fileName : `../${backing.pool}/${backing.fileName}`;
}

export class DataPaths {
  readonly poolsDir: string;

  constructor(readonly dataDir: string) {
    this.poolsDir = path.join(dataDir, 'pools');
  }

  poolDir(pool: string): string {
    return path.join(this.poolsDir, pool);
  }

  file(ref: FileRef): string {
    return path.join(this.poolsDir, ref.pool, ref.fileName);
  }

  layer(layer: Pick<LayerRecord, 'pool' | 'fileName'>): string {
    return this.file(layer);
  }
}

/** fsync a folder, so that files created or removed in it survive a power cut. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Removes a file; a file already gone is fine. */
export async function unlinkQuiet(file: string): Promise<boolean> {
  try {
    await fs.unlink(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new StorageError('IO_ERROR', `cannot delete ${file}: ${(err as Error).message}`, { cause: err });
  }
}

/** Host bytes a file occupies (0 when it is missing). */
export async function allocatedBytesOf(file: string): Promise<number> {
  try {
    return (await fs.stat(file)).blocks * 512;
  } catch {
    return 0;
  }
}

/** Creates a new, empty qcow2 layer file (failing if it exists), durable when this resolves. */
export async function createLayerFile(file: string, sizeBytes: number, backingName?: string): Promise<void> {
  const host = await LocalHostFile.open(file, { exclusive: true });
  try {
    await Qcow2Image.create(host, {
      sizeBytes,
      clusterSizeBytes: LAYER_CLUSTER_BYTES,
      ...(backingName === undefined ? {} : { backingFile: backingName, backingFormat: 'qcow2' }),
    });
    await host.flush();
  } finally {
    await host.close();
  }
}

/** The backing image of a layer opened by openChain (always qcow2). */
export function backingOf(image: Qcow2Image): Qcow2Image | undefined {
  const backing: Image | undefined = image.backing;
  if (backing === undefined) return undefined;
  if (!(backing instanceof Qcow2Image)) throw new Error('assertion failed: layer backing is not qcow2');
  return backing;
}

/**
 * Opens a chain the catalog describes (top first): the top writable or not, every backing layer
 * read-only. Closing the returned image closes the whole chain.
 */
export async function openChain(paths: DataPaths, chain: readonly LayerRecord[], options: { writable: boolean }): Promise<Qcow2Image> {
  const files: HostFile[] = [];
  const openAt = async (depth: number, writable: boolean): Promise<Qcow2Image> => {
    const layer = chain[depth];
    if (layer === undefined) throw new Error('assertion failed: openChain past the end of the chain');
    const file = await LocalHostFile.open(paths.layer(layer), { readOnly: !writable });
    files.push(file);
    const openBacking = async (ref: BackingRef, backingDepth: number): Promise<Image> => {
      const expected = chain[backingDepth];
      if (expected === undefined) {
        throw new StorageError('CORRUPT', `${file.name} names backing file '${ref.fileName}', but the catalog gives layer ${layer.id} none`);
      }
      const name = backingFileName(layer, expected);
      if (ref.fileName !== name) {
        throw new StorageError('CORRUPT', `${file.name} names backing file '${ref.fileName}', but the catalog says '${name}'`);
      }
      return openAt(backingDepth, false);
    };
    const image = await Qcow2Image.open(file, { readOnly: !writable, depth, openBacking });
    if (image.backing === undefined && chain[depth + 1] !== undefined) {
      throw new StorageError('CORRUPT', `${file.name} has no backing file, but the catalog says layer ${chain[depth + 1]!.id}`);
    }
    return image;
  };
  try {
    return await openAt(0, options.writable);
  } catch (err) {
    await Promise.allSettled(files.map((f) => f.close()));
    throw err;
  }
}

/** Opens one layer file alone (no backing), for header changes and checks. */
export async function openLayerAlone(file: string, options: { writable: boolean }): Promise<Qcow2Image> {
  const host = await LocalHostFile.open(file, { readOnly: !options.writable });
  try {
    return await Qcow2Image.open(host, { readOnly: !options.writable, ignoreBacking: true });
  } catch (err) {
    await host.close().catch(() => {});
    throw err;
  }
}

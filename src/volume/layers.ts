/**
 * Layer files: how they are named, created and measured, and how a chain of them is opened, all
 * through the service's LayerStore (src/core/layer-store.ts), which alone knows where they live.
 *
 * Every layer of a pool is `<layerId>.qcow2` in the pool's namespace (`<data>/pools/<pool>/` with
 * the default LocalLayerStore); a layer's backing file name is the store's backingName, relative
 * to its own pool, so `qemu-img info --backing-chain` on any local layer file shows its chain.
 * The catalog is the truth about chains: opening checks that each header names exactly the
 * backing layer the catalog says.
 */
import { StorageError } from '../core/errors.js';
import type { HostFile } from '../core/host-file.js';
import type { BackingRef, Image } from '../core/image.js';
import type { LayerRef, LayerStore } from '../core/layer-store.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import type { LayerRecord } from './records.js';

export const LAYER_SUFFIX = '.qcow2';
/** Temporary files in a pool folder (spooled imports, exports being converted): never referenced. */
export const TEMP_PREFIX = '.tmp-';
/** Layer file names Strata creates: 16 hex digits. Anything else in a pool folder is not ours. */
export const LAYER_FILE_PATTERN = /^[0-9a-f]{16}\.qcow2$/;
export const LAYER_CLUSTER_BYTES = 64 * 1024;

export function layerFileName(layerId: string): string {
  return `${layerId}${LAYER_SUFFIX}`;
}

/** Where an operator finds a layer file: its local path, or "<pool>/<file>" in a store without paths. */
export function layerLocation(store: LayerStore, ref: LayerRef): string {
  return store.location(ref) ?? `${ref.pool}/${ref.fileName}`;
}

/** Where an operator finds a pool's files: its local folder, or the pool's name. */
export function poolLocation(store: LayerStore, pool: string): string {
  return store.poolLocation(pool) ?? pool;
}

/**
 * Creates a new, empty qcow2 layer file (failing if it exists) over `backing` when given, durable
 * when this resolves (the pool's syncPool makes its name durable).
 */
export async function createLayerFile(store: LayerStore, ref: LayerRef, sizeBytes: number, backing?: LayerRef): Promise<void> {
  const host = await store.create(ref);
  try {
    await Qcow2Image.create(host, {
      sizeBytes,
      clusterSizeBytes: LAYER_CLUSTER_BYTES,
      ...(backing === undefined ? {} : { backingFile: store.backingName(ref, backing), backingFormat: 'qcow2' }),
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
export async function openChain(store: LayerStore, chain: readonly LayerRecord[], options: { writable: boolean }): Promise<Qcow2Image> {
  const files: HostFile[] = [];
  const openAt = async (depth: number, writable: boolean): Promise<Qcow2Image> => {
    const layer = chain[depth];
    if (layer === undefined) throw new Error('assertion failed: openChain past the end of the chain');
    const file = await store.open(layer, { readOnly: !writable });
    files.push(file);
    const openBacking = async (ref: BackingRef, backingDepth: number): Promise<Image> => {
      const expected = chain[backingDepth];
      if (expected === undefined) {
        throw new StorageError('CORRUPT', `${file.name} names backing file '${ref.fileName}', but the catalog gives layer ${layer.id} none`);
      }
      const name = store.backingName(layer, expected);
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
export async function openLayerAlone(store: LayerStore, ref: LayerRef, options: { writable: boolean }): Promise<Qcow2Image> {
  const host = await store.open(ref, { readOnly: !options.writable });
  try {
    return await Qcow2Image.open(host, { readOnly: !options.writable, ignoreBacking: true });
  } catch (err) {
    await host.close().catch(() => {});
    throw err;
  }
}

/**
 * Opening images for the offline tools: probe the format by its magic (qcow2, else raw) unless -f
 * forces one, and open the backing chain the way QEMU does: a relative backing name is resolved
 * against the directory of the image that names it, the format comes from the header (or is
 * probed), and chains deeper than MAX_CHAIN_DEPTH images fail with LIMIT_EXCEEDED.
 *
 * Every file is opened through LocalHostFile.open.
 */
import { realpath } from 'node:fs/promises';
import { StorageError, isStorageError } from '../../core/errors.js';
import type { HostFile } from '../../core/host-file.js';
import type { BackingRef, Image } from '../../core/image.js';
import { LocalHostFile } from '../../store/local-file.js';
import { Qcow2Image, qcow2Format } from '../../../formats/qcow2/index.js';
import { rawFormat } from '../../../formats/raw/index.js';
import { CliError, withContext } from '../errors.js';

/** Images in a chain, counting the top: depth 0 .. MAX_CHAIN_DEPTH - 1. */
export const MAX_CHAIN_DEPTH = 64;

export const SUPPORTED_FORMATS = ['qcow2', 'raw'] as const;
export type FormatName = (typeof SUPPORTED_FORMATS)[number];

const PROBE_BYTES = 1024;

/** Checks a -f / -O / -F value. */
export function checkFormatName(name: string, what = 'format'): FormatName {
  if ((SUPPORTED_FORMATS as readonly string[]).includes(name)) return name as FormatName;
  const cause = new StorageError('UNSUPPORTED', `unknown ${what} '${name}'`);
  throw new CliError(cause.message, { cause, hint: `Strata handles ${SUPPORTED_FORMATS.join(' and ')}` });
}

/** Guesses a file's format from its first bytes: qcow2 by its magic, anything else is raw. */
export async function probeFormat(file: HostFile): Promise<FormatName> {
  const head = new Uint8Array(PROBE_BYTES);
  const got = await file.pread(head, 0);
  return qcow2Format.probe(head.subarray(0, got)) ? 'qcow2' : 'raw';
}

/** Probes the format of the file at path. */
export async function probeFormatOfPath(path: string): Promise<FormatName> {
  const file = await LocalHostFile.open(path, { readOnly: true });
  try {
    return await probeFormat(file);
  } finally {
    await file.close();
  }
}

/**
 * QEMU's path_combine: an absolute backing name stands alone; a relative one is taken relative to
 * the directory part of the child's name ("sub/c.qcow2" + "../b.qcow2" = "sub/../b.qcow2").
 */
export function combineBackingPath(childPath: string, backingName: string): string {
  if (backingName.startsWith('/')) return backingName;
  const slash = childPath.lastIndexOf('/');
  if (slash < 0) return backingName;
  return childPath.slice(0, slash + 1) + backingName;
}

export interface OpenImageOptions {
  /** -f: the format to use instead of probing. */
  formatName?: string | undefined;
  readOnly: boolean;
  /** -U: share the image with other users; accepted (Strata's offline tools take no locks). */
  forceShare?: boolean;
  /** Open without the backing chain (info, check, rebase -u). */
  ignoreBacking?: boolean;
  /** qcow2 dirty-bit policy for the top image (check uses 'ignore'). */
  dirtyPolicy?: 'repair' | 'ignore';
  /** Open the top image for check: tables past the end of the file do not fail the open (qcow2 forCheck). */
  forCheck?: boolean;
  /** Which backing layers to open writable (commit's base); read-only otherwise. */
  writableBacking?: (layer: { path: string; depth: number }) => boolean;
}

export interface ChainLayer {
  image: Image;
  /** The path the layer was opened from (the user's for the top, path_combine'd for backings). */
  path: string;
  formatName: string;
  depth: number;
}

export interface OpenedImage {
  image: Image;
  path: string;
  /** Top first: layers[0].image === image; then each backing in turn. */
  layers: ChainLayer[];
  close(): Promise<void>;
}

async function realpathOrSelf(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return path;
  }
}

interface OpenLayerOptions {
  formatName: FormatName;
  readOnly: boolean;
  depth: number;
  ignoreBacking: boolean;
  dirtyPolicy: 'repair' | 'ignore' | undefined;
  forCheck?: boolean;
  openBacking: ((ref: BackingRef, depth: number) => Promise<Image>) | undefined;
}

async function openLayer(file: HostFile, options: OpenLayerOptions): Promise<Image> {
  if (options.formatName === 'qcow2') {
    return Qcow2Image.open(file, {
      readOnly: options.readOnly,
      depth: options.depth,
      ignoreBacking: options.ignoreBacking,
      ...(options.openBacking ? { openBacking: options.openBacking } : {}),
      ...(options.dirtyPolicy ? { dirtyPolicy: options.dirtyPolicy } : {}),
      ...(options.forCheck ? { forCheck: true } : {}),
    });
  }
  return rawFormat.open(file, { readOnly: options.readOnly, depth: options.depth });
}

/** Opens a file (read-only or not), then the image in it, closing the file if that fails. */
async function openFileAndImage(
  path: string,
  formatName: string | undefined,
  build: (file: HostFile, format: FormatName) => Promise<Image>,
  readOnly: boolean,
): Promise<{ image: Image; formatName: FormatName }> {
  const forced = formatName === undefined ? undefined : checkFormatName(formatName);
  const file = await LocalHostFile.open(path, { readOnly });
  try {
    const format = forced ?? (await probeFormat(file));
    const image = await build(file, format);
    return { image, formatName: format };
  } catch (err) {
    await file.close().catch(() => {});
    throw err;
  }
}

/** Opens an image and, unless told not to, its whole backing chain. */
export async function openImage(path: string, options: OpenImageOptions): Promise<OpenedImage> {
  const paths: string[] = [path];
  const formats: string[] = [];
  const realPaths: string[] = [await realpathOrSelf(path)];

  const openBacking = async (ref: BackingRef, depth: number): Promise<Image> => {
    const childPath = paths[depth - 1] ?? ref.childName;
    if (depth >= MAX_CHAIN_DEPTH) {
      throw new StorageError(
        'LIMIT_EXCEEDED',
        `backing chain of '${path}' is deeper than ${MAX_CHAIN_DEPTH} images (at '${childPath}')`,
      );
    }
    const backingPath = combineBackingPath(childPath, ref.fileName);
    const real = await realpathOrSelf(backingPath);
    const loopAt = realPaths.slice(0, depth).indexOf(real);
    if (loopAt >= 0) {
      throw new StorageError(
        'INVALID_ARGUMENT',
        `backing chain of '${path}' loops: '${childPath}' is backed by '${paths[loopAt] ?? backingPath}' again`,
      );
    }
    paths[depth] = backingPath;
    realPaths[depth] = real;
    const readOnly = !(options.writableBacking?.({ path: backingPath, depth }) ?? false);
    try {
      const opened = await openFileAndImage(
        backingPath,
        ref.formatName,
        (file, format) =>
          openLayer(file, { formatName: format, readOnly, depth, ignoreBacking: false, dirtyPolicy: undefined, openBacking }),
        readOnly,
      );
      formats[depth] = opened.formatName;
      return opened.image;
    } catch (err) {
      if (isStorageError(err)) {
        if (err.message.startsWith('could not open backing file')) throw err;
        throw new StorageError(err.code, `could not open backing file '${backingPath}': ${err.message}`, { cause: err });
      }
      throw err;
    }
  };

  let opened: { image: Image; formatName: FormatName };
  try {
    opened = await openFileAndImage(
      path,
      options.formatName,
      (file, format) =>
        openLayer(file, {
          formatName: format,
          readOnly: options.readOnly,
          depth: 0,
          ignoreBacking: options.ignoreBacking === true,
          dirtyPolicy: options.dirtyPolicy,
          forCheck: options.forCheck === true,
          openBacking: options.ignoreBacking ? undefined : openBacking,
        }),
      options.readOnly,
    );
  } catch (err) {
    if (isStorageError(err) && /^cannot (open|stat)/.test(err.message)) throw err;
    throw withContext(`could not open '${path}'`, err);
  }
  formats[0] = opened.formatName;

  const layers: ChainLayer[] = [];
  let layer: Image | undefined = opened.image;
  for (let depth = 0; layer !== undefined; depth++) {
    layers.push({ image: layer, path: paths[depth] ?? layer.file.name, formatName: formats[depth] ?? layer.formatName, depth });
    layer = layer.backing;
  }
  const image = opened.image;
  return { image, path, layers, close: () => closeChain(layers) };
}

/**
 * Closes an opened chain. Closing the top closes what it owns; layers that are still open after
 * that (an image that does not close its backing) are closed here, and their files with them.
 */
async function closeChain(layers: ChainLayer[]): Promise<void> {
  let first: unknown;
  for (const layer of layers) {
    try {
      await layer.image.close();
    } catch (err) {
      // A backing closed by its child reports that; only the first real failure matters.
      if (first === undefined && !isAlreadyClosed(err)) first = err;
    }
  }
  if (first !== undefined) throw first;
}

function isAlreadyClosed(err: unknown): boolean {
  return err instanceof Error && /closed/i.test(err.message);
}

/** The qcow2 engine behind an image, when it is one. */
export function asQcow2(image: Image): Qcow2Image | undefined {
  return image instanceof Qcow2Image ? image : undefined;
}

/** Like asQcow2, but fails with UNSUPPORTED for other formats. */
export function requireQcow2(image: Image, what: string): Qcow2Image {
  const q = asQcow2(image);
  if (q === undefined) {
    throw new StorageError('UNSUPPORTED', `${what} needs a qcow2 image; '${image.file.name}' is ${image.formatName}`);
  }
  return q;
}

import type { BlockDevice } from './block-device.js';
import type { HostFile } from './host-file.js';

/**
 * Image: a BlockDevice stored in a HostFile in some format, with an optional backing image that
 * supplies the contents of ranges this layer leaves unallocated.
 */
export interface Image extends BlockDevice {
  readonly formatName: string;
  readonly file: HostFile;
  readonly backing: Image | undefined;
}

/** Opens the image a backing-file reference names. `depth` is the depth of the image being opened. */
export type BackingOpener = (ref: BackingRef, depth: number) => Promise<Image>;

export interface BackingRef {
  /** The backing file name exactly as stored in the child's header. */
  fileName: string;
  /** The backing format from the header extension, if any. */
  formatName: string | undefined;
  /** The name of the child image, for resolving relative paths and for errors. */
  childName: string;
}

export interface ImageOpenOptions {
  readOnly?: boolean;
  /** How to open a backing file; without it, an image with a backing file fails to open. */
  openBacking?: BackingOpener;
  /** Open without the backing file: unallocated ranges read as zeroes (qemu-img's -U style tools). */
  ignoreBacking?: boolean;
  /** This image's depth in a chain (0 for the top). */
  depth?: number;
}

export interface ImageFormat {
  readonly name: string;
  /** True when the first bytes of a file look like this format. */
  probe(firstBytes: Uint8Array): boolean;
  open(file: HostFile, options: ImageOpenOptions): Promise<Image>;
}

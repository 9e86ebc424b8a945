/**
 * raw: the image is the host file itself. Guest offset N is host offset N and the virtual size is
 * the file's size. There is no backing file and no metadata; holes in the host file read as zeroes
 * and are reported as 'zero' extents when the HostFile can find them (seekData/seekHole).
 */
import type {
  BlockDeviceCapabilities,
  Extent,
  WriteFlags,
  WriteZeroesFlags,
} from '../../src/core/block-device.js';
import { StorageError } from '../../src/core/errors.js';
import { checkGuestRange } from '../../src/core/guest-range.js';
import type { HostFile } from '../../src/core/host-file.js';
import type { Image, ImageFormat, ImageOpenOptions } from '../../src/core/image.js';

/** Optional HostFile extension (LocalHostFile, MemoryHostFile, FaultInjectingFile offer it). */
export interface SeekableHostFile extends HostFile {
  /** First offset >= hostOffset holding data, or undefined when none does. */
  seekData(hostOffset: number): Promise<number | undefined>;
  /** First offset >= hostOffset in a hole (end of file counts), or undefined at or past the end. */
  seekHole(hostOffset: number): Promise<number | undefined>;
}

export function isSeekableHostFile(file: HostFile): file is SeekableHostFile {
  const f = file as Partial<SeekableHostFile>;
  return typeof f.seekData === 'function' && typeof f.seekHole === 'function' && file.supports().seekData;
}

/** Largest buffer of zeroes written at once by writeZeroes without mayUnmap. */
const ZERO_WRITE_BYTES = 1024 * 1024;
let zeroBuffer: Uint8Array | undefined;

export class RawImage implements Image {
  readonly formatName = 'raw';
  readonly file: HostFile;
  readonly backing: undefined = undefined;
  readonly capabilities: BlockDeviceCapabilities;
  /** The file's size when opened (or after resize()). */
  sizeBytes: number;
  private closed = false;

  constructor(file: HostFile, sizeBytes: number, options: { readOnly?: boolean } = {}) {
    this.file = file;
    this.sizeBytes = sizeBytes;
    const readOnly = options.readOnly === true || file.readOnly;
    this.capabilities = { readOnly, discard: !readOnly, efficientZeroes: !readOnly, flush: !readOnly };
  }

  /** Makes `file` a raw image of sizeBytes (truncating whatever it held). Not flushed. */
  static async create(file: HostFile, sizeBytes: number): Promise<RawImage> {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) {
      throw new StorageError('INVALID_ARGUMENT', `invalid raw image size ${sizeBytes}`);
    }
    if (file.readOnly) throw new StorageError('READ_ONLY', `cannot create a raw image in read-only ${file.name}`);
    await file.truncate(0);
    await file.truncate(sizeBytes);
    return new RawImage(file, sizeBytes);
  }

  static async open(file: HostFile, options: ImageOpenOptions = {}): Promise<RawImage> {
    return new RawImage(file, await file.sizeBytes(), { readOnly: options.readOnly === true });
  }

  async read(guestOffset: number, buf: Uint8Array): Promise<void> {
    this.checkRange('read', guestOffset, buf.length);
    await this.file.pread(buf, guestOffset);
  }

  /** Not async: the common case (no FUA) hands back the file's own promise, with no extra hop. */
  write(guestOffset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    try {
      this.checkWritable('write');
      this.checkRange('write', guestOffset, data.length);
    } catch (err) {
      return Promise.reject(err);
    }
    const written = this.file.pwrite(data, guestOffset);
    return flags?.fua ? written.then(() => this.file.flush()) : written;
  }

  async writeZeroes(guestOffset: number, lengthBytes: number, flags?: WriteZeroesFlags): Promise<void> {
    this.checkWritable('writeZeroes');
    this.checkRange('writeZeroes', guestOffset, lengthBytes);
    if (lengthBytes === 0) return;
    if (flags?.mayUnmap) {
      await this.file.punchHole(guestOffset, lengthBytes);
    } else {
      zeroBuffer ??= new Uint8Array(ZERO_WRITE_BYTES);
      const end = guestOffset + lengthBytes;
      for (let pos = guestOffset; pos < end; pos += ZERO_WRITE_BYTES) {
        const n = Math.min(ZERO_WRITE_BYTES, end - pos);
        await this.file.pwrite(n === ZERO_WRITE_BYTES ? zeroBuffer : zeroBuffer.subarray(0, n), pos);
      }
    }
    if (flags?.fua) await this.file.flush();
  }

  async discard(guestOffset: number, lengthBytes: number): Promise<void> {
    this.checkWritable('discard');
    this.checkRange('discard', guestOffset, lengthBytes);
    if (lengthBytes === 0) return;
    await this.file.punchHole(guestOffset, lengthBytes);
  }

  async flush(): Promise<void> {
    this.checkOpen('flush');
    if (this.capabilities.readOnly) return;
    await this.file.flush();
  }

  /**
   * 'data' where the host file holds data and 'zero' in its holes, when the file can seek them;
   * otherwise one 'data' extent. Adjacent extents of one kind are merged.
   */
  async blockStatus(guestOffset: number, lengthBytes: number): Promise<Extent[]> {
    this.checkRange('blockStatus', guestOffset, lengthBytes);
    if (lengthBytes === 0) return [];
    const end = guestOffset + lengthBytes;
    if (!isSeekableHostFile(this.file)) return [{ guestOffset, lengthBytes, kind: 'data' }];
    const file = this.file;
    const extents: Extent[] = [];
    const push = (start: number, stop: number, kind: Extent['kind']): void => {
      if (stop <= start) return;
      const last = extents[extents.length - 1];
      if (last && last.kind === kind && last.guestOffset + last.lengthBytes === start) {
        last.lengthBytes += stop - start;
      } else {
        extents.push({ guestOffset: start, lengthBytes: stop - start, kind });
      }
    };
    let pos = guestOffset;
    while (pos < end) {
      const data = await file.seekData(pos);
      if (data === undefined || data >= end) {
        push(pos, end, 'zero');
        break;
      }
      // seekData never goes backwards; guard against a broken implementation looping forever.
      const dataStart = Math.max(data, pos);
      push(pos, dataStart, 'zero');
      const hole = await file.seekHole(dataStart);
      const dataEnd = hole === undefined || hole > end ? end : Math.max(hole, dataStart + 1);
      push(dataStart, dataEnd, 'data');
      pos = dataEnd;
    }
    return extents;
  }

  /** Changes the virtual size: the host file is truncated or extended (sparse) to newSizeBytes. */
  async resize(newSizeBytes: number, options: { allowShrink?: boolean } = {}): Promise<void> {
    this.checkWritable('resize');
    if (!Number.isSafeInteger(newSizeBytes) || newSizeBytes < 0) {
      throw new StorageError('INVALID_ARGUMENT', `invalid size ${newSizeBytes} for ${this.file.name}`);
    }
    if (newSizeBytes < this.sizeBytes && options.allowShrink !== true) {
      throw new StorageError(
        'INVALID_ARGUMENT',
        `shrinking ${this.file.name} from ${this.sizeBytes} to ${newSizeBytes} bytes needs allowShrink`,
      );
    }
    await this.file.truncate(newSizeBytes);
    this.sizeBytes = newSizeBytes;
  }

  /** Closes the host file. A second call does nothing. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.file.close();
  }

  private checkOpen(what: string): void {
    if (this.closed) throw new StorageError('IO_ERROR', `${what} on raw image ${this.file.name}: the image is closed`);
  }

  private checkWritable(what: string): void {
    this.checkOpen(what);
    if (this.capabilities.readOnly) {
      throw new StorageError('READ_ONLY', `${what} on raw image ${this.file.name}: the image is read-only`);
    }
  }

  private checkRange(what: string, guestOffset: number, lengthBytes: number): void {
    this.checkOpen(what);
    checkGuestRange(`${what} on raw image ${this.file.name}`, this.sizeBytes, guestOffset, lengthBytes);
  }

}

export const rawFormat: ImageFormat = {
  name: 'raw',
  /** Anything is a valid raw image: probe last, as the fallback. */
  probe: () => true,
  open: (file, options) => RawImage.open(file, options),
};

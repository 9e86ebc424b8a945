/** "Guest" memory: a memfd mapped MAP_SHARED, split into regions with guest and front-end addresses. */
import { closeFd } from '../../../src/sys/fd.js';
import { memfdCreate } from '../../../src/sys/memfd.js';
import { mapShared, type MappedRegion } from '../../../src/sys/mmap.js';
import { MemRegionDesc } from './wire.js';
// ---------------------------------------------------------------------------------------------
// Guest memory

export interface Region {
  index: number;
  guestAddr: bigint;
  sizeBytes: number;
  mmapOffsetBytes: number;
  map: MappedRegion;
  bytes: Uint8Array;
  dv: DataView;
  /** bump allocator cursor */
  used: number;
}

/** A buffer in guest memory: its guest address and a view of it in this process. */
export interface GuestBuffer {
  guestAddr: bigint;
  frontendAddr: bigint;
  bytes: Uint8Array;
  region: number;
}

export const REGION_GAP_BYTES = 2 * 1024 * 1024;

export class GuestMemoryImage {
  readonly fd: number;
  readonly regions: Region[] = [];
  private cursor = 0;

  constructor(totalBytes: number, regionCount: number) {
    const regionBytes = Math.ceil(totalBytes / regionCount / (2 * 1024 * 1024)) * 2 * 1024 * 1024;
    this.fd = memfdCreate('strata-vhost-frontend', regionBytes * regionCount);
    try {
      for (let i = 0; i < regionCount; i++) {
        const map = mapShared(this.fd, regionBytes, i * regionBytes);
        this.regions.push({
          index: i,
          guestAddr: BigInt(i) * BigInt(regionBytes + REGION_GAP_BYTES),
          sizeBytes: regionBytes,
          mmapOffsetBytes: i * regionBytes,
          map,
          bytes: map.bytes,
          dv: new DataView(map.bytes.buffer, map.bytes.byteOffset, map.bytes.byteLength),
          used: 0,
        });
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  get totalBytes(): number {
    return this.regions.reduce((s, r) => s + r.sizeBytes, 0);
  }

  describe(): MemRegionDesc[] {
    return this.regions.map((r) => ({
      guestAddr: r.guestAddr,
      sizeBytes: BigInt(r.sizeBytes),
      frontendAddr: r.map.hostAddr,
      mmapOffsetBytes: BigInt(r.mmapOffsetBytes),
    }));
  }

  /** Allocates within one region (round robin over the regions), zeroed. */
  alloc(sizeBytes: number, align = 64, region?: number): GuestBuffer {
    const n = this.regions.length;
    for (let k = 0; k < n; k++) {
      const r = this.regions[region ?? (this.cursor + k) % n]!;
      const start = Math.ceil(r.used / align) * align;
      if (start + sizeBytes <= r.sizeBytes) {
        r.used = start + sizeBytes;
        if (region === undefined) this.cursor = (r.index + 1) % n;
        const bytes = r.bytes.subarray(start, start + sizeBytes);
        bytes.fill(0);
        return { guestAddr: r.guestAddr + BigInt(start), frontendAddr: r.map.hostAddr + BigInt(start), bytes, region: r.index };
      }
      if (region !== undefined) break;
    }
    throw new Error(`guest memory exhausted allocating ${sizeBytes} bytes`);
  }

  /** A view of guest memory [guestAddr, +len) within one region, or undefined. */
  view(guestAddr: bigint, lengthBytes: number): Uint8Array | undefined {
    for (const r of this.regions) {
      if (guestAddr >= r.guestAddr && guestAddr + BigInt(lengthBytes) <= r.guestAddr + BigInt(r.sizeBytes)) {
        const off = Number(guestAddr - r.guestAddr);
        return r.bytes.subarray(off, off + lengthBytes);
      }
    }
    return undefined;
  }

  close(): void {
    for (const r of this.regions) r.map.unmap();
    this.regions.length = 0;
    closeFd(this.fd);
  }
}

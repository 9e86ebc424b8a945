/** A BlockDevice in memory for export tests that need a device and nothing of a store (reads see what was written). */
import type { BlockDevice, BlockDeviceCapabilities, Extent } from '../../src/core/block-device.js';

export class RamDevice implements BlockDevice {
  readonly capabilities: BlockDeviceCapabilities = { readOnly: false, discard: false, efficientZeroes: false, flush: true };
  protected readonly data: Uint8Array;

  constructor(readonly sizeBytes: number) {
    this.data = new Uint8Array(sizeBytes);
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    buf.set(this.data.subarray(offset, offset + buf.length));
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.data.set(data, offset);
  }
  async writeZeroes(offset: number, lengthBytes: number): Promise<void> {
    this.data.fill(0, offset, offset + lengthBytes);
  }
  async discard(): Promise<void> {}
  async flush(): Promise<void> {}
  async blockStatus(offset: number, lengthBytes: number): Promise<Extent[]> {
    return [{ guestOffset: offset, lengthBytes, kind: 'data' }];
  }
  async close(): Promise<void> {}
}

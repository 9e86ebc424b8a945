import { Qcow2Image } from '../../formats/qcow2/index.js';
import { RawImage } from '../../formats/raw/index.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { LiveVolume } from '../../src/volume/live.js';
import { blockDeviceConformance } from './block-device.js';

function backingPattern(sizeBytes: number): Uint8Array {
  const bytes = new Uint8Array(sizeBytes);
  for (let i = 0; i < sizeBytes; i += 4096) bytes.fill((i / 4096) % 251 + 1, i, i + 4096);
  return bytes;
}

/**
 * A qcow2 image over a backing file holding `backingPattern` (qcow2, as in a volume's chain, or
 * raw); `readOnly` opens the top read-only.
 */
async function qcow2OverBacking(sizeBytes: number, baseFormat: 'qcow2' | 'raw'): Promise<{ image: Qcow2Image; initial: Uint8Array }> {
  const initial = backingPattern(sizeBytes);
  let openBase: () => Promise<Qcow2Image | RawImage>;
  if (baseFormat === 'raw') {
    const base = MemoryHostFile.fromBytes(initial, { name: 'base.raw' });
    openBase = () => RawImage.open(base.readOnlyView(), { readOnly: true });
  } else {
    const base = new MemoryHostFile(undefined, { name: 'base.qcow2' });
    await Qcow2Image.create(base, { sizeBytes });
    const writer = await Qcow2Image.open(base);
    await writer.write(0, initial);
    await writer.close();
    openBase = () => Qcow2Image.open(base.readOnlyView(), { readOnly: true, depth: 1 });
  }
  const top = new MemoryHostFile(undefined, { name: 'top.qcow2' });
  await Qcow2Image.create(top, { sizeBytes, backingFile: `base.${baseFormat}`, backingFormat: baseFormat });
  const image = await Qcow2Image.open(top, { openBacking: openBase });
  return { image, initial };
}

blockDeviceConformance('qcow2', {
  create: async (sizeBytes) => {
    const file = new MemoryHostFile();
    await Qcow2Image.create(file, { sizeBytes });
    return { device: await Qcow2Image.open(file), initial: new Uint8Array(sizeBytes) };
  },
  createReadOnly: async (sizeBytes) => {
    const file = new MemoryHostFile();
    await Qcow2Image.create(file, { sizeBytes });
    return Qcow2Image.open(file.readOnlyView(), { readOnly: true });
  },
});

blockDeviceConformance('qcow2 over a backing file', {
  create: async (sizeBytes) => {
    const { image, initial } = await qcow2OverBacking(sizeBytes, 'raw');
    return { device: image, initial };
  },
});

blockDeviceConformance('raw', {
  create: async (sizeBytes) => ({ device: await RawImage.create(new MemoryHostFile(), sizeBytes), initial: new Uint8Array(sizeBytes) }),
  createReadOnly: async (sizeBytes) => {
    const file = new MemoryHostFile();
    await RawImage.create(file, sizeBytes);
    return RawImage.open(file.readOnlyView(), { readOnly: true });
  },
});

/** A live device (what exports get) over a qcow2 chain, reopened by its opener after a pause. */
async function liveDevice(sizeBytes: number, readOnly: boolean): Promise<{ device: LiveVolume; initial: Uint8Array }> {
  const { image, initial } = await qcow2OverBacking(sizeBytes, 'qcow2');
  const live = new LiveVolume(
    { volumeId: 'v1', snapshotId: undefined },
    !readOnly,
    { image, layerIds: ['top', 'base'] },
    async () => ({ image, layerIds: ['top', 'base'] }),
    () => {},
  );
  return { device: live, initial };
}

blockDeviceConformance('live device over a qcow2 chain', {
  create: async (sizeBytes) => {
    const { device, initial } = await liveDevice(sizeBytes, false);
    return { device: device.handle(false), initial };
  },
  createReadOnly: async (sizeBytes) => (await liveDevice(sizeBytes, true)).device.handle(true),
});

// Under QoS limits (issue 15) the live device behaves the same, only slower: limits every request
// of the suite meets (and waits for), none of them failed or reordered.
blockDeviceConformance('live device under QoS limits', {
  create: async (sizeBytes) => {
    const { device, initial } = await liveDevice(sizeBytes, false);
    device.throttle.setLimits({ totalIops: 20_000, writeIops: 5_000, readBps: 256 * 1024 * 1024, writeBps: 128 * 1024 * 1024 });
    return { device: device.handle(false), initial };
  },
  createReadOnly: async (sizeBytes) => {
    const { device } = await liveDevice(sizeBytes, true);
    device.throttle.setLimits({ readIops: 20_000 });
    return device.handle(true);
  },
});

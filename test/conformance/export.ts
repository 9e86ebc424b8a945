/**
 * The Export conformance suite: every implementation (NBD, vhost-user-blk) runs it
 * (export.test.ts) over its real protocol, through a client that speaks it (test/nbd's pipelined
 * client, the TypeScript vhost-user front-end). The suite owns the device: a qcow2 image over a
 * MemoryHostFile, behind an InstrumentedDevice that records what reached it and can fail or hold a
 * call. The harness starts the implementation on it and connects clients; where the protocols
 * differ (the error each one reports), the harness says so in `errors`.
 */
import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import type { BlockDevice } from '../../src/core/block-device.js';
import type { Export } from '../../src/core/export.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { InstrumentedDevice } from '../support/instrumented-device.js';

/** A request the export answered with an error: `status` is the protocol's (NBD errno, virtio-blk status). */
export class ExportRequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ExportRequestError';
  }
}

/** A request that got no answer because the export closed the connection. */
export class ExportConnectionClosedError extends Error {
  constructor(message = 'the export closed the connection') {
    super(message);
    this.name = 'ExportConnectionClosedError';
  }
}

/** One connection to an export. Offsets and lengths are multiples of 512 (virtio-blk sectors). */
export interface ExportClient {
  read(guestOffset: number, lengthBytes: number): Promise<Uint8Array>;
  write(guestOffset: number, data: Uint8Array): Promise<void>;
  writeZeroes(guestOffset: number, lengthBytes: number): Promise<void>;
  flush(): Promise<void>;
  disconnect(): Promise<void>;
}

export interface StartedExport {
  readonly exp: Export;
  /** A new connection; rejects when the export does not serve one (after requestShutdown). */
  connect(): Promise<ExportClient>;
  /** Shuts the export down if the test did not, and frees what start() made. */
  stop(): Promise<void>;
}

/** The protocol's answer to each kind of refused request. */
export interface ExportProtocolErrors {
  readOnly: number;
  readOutOfRange: number;
  /** A write or write-zeroes beyond the end. */
  writeOutOfRange: number;
  /** A device call that failed with StorageError IO_ERROR. */
  deviceIoError: number;
}

export interface ExportHarness {
  /** Starts the implementation on `device` (read-only when the device is). */
  start(device: BlockDevice): Promise<StartedExport>;
  errors: ExportProtocolErrors;
}

const KiB = 1024;
const MiB = 1024 * KiB;
/** Not a multiple of the qcow2 cluster: the last block sits in a partly used cluster. */
const SIZE_BYTES = 6 * MiB + 12 * KiB;
const SECTOR_BYTES = 512;
const MAX_REQUEST_BYTES = 64 * KiB;
const QUEUE_DEPTH = 32;

interface Subject {
  file: MemoryHostFile;
  image: Qcow2Image;
  device: InstrumentedDevice;
  started: StartedExport;
}

function filled(lengthBytes: number, random: SeededRandom): Uint8Array {
  return random.fill(new Uint8Array(lengthBytes));
}

/** A random sector-aligned range of 512 B..64 KiB within the device. */
function randomRange(random: SeededRandom): { guestOffset: number; lengthBytes: number } {
  const lengthBytes = random.intBetween(1, MAX_REQUEST_BYTES / SECTOR_BYTES) * SECTOR_BYTES;
  const guestOffset = random.int((SIZE_BYTES - lengthBytes) / SECTOR_BYTES + 1) * SECTOR_BYTES;
  return { guestOffset, lengthBytes };
}

async function expectStatus(promise: Promise<unknown>, status: number): Promise<void> {
  const err = await promise.then(
    () => new Error(`expected the protocol error ${status}, but the request succeeded`),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ExportRequestError);
  expect((err as ExportRequestError).status, (err as Error).message).toBe(status);
}

async function expectClosed(promise: Promise<unknown>): Promise<void> {
  const err = await promise.then(
    () => new Error('expected the connection to close, but the request succeeded'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ExportConnectionClosedError);
}

/** Reads the whole device through `read` in 64 KiB pieces. */
async function readAll(read: (guestOffset: number, lengthBytes: number) => Promise<Uint8Array>): Promise<Uint8Array> {
  const out = new Uint8Array(SIZE_BYTES);
  const reads: Promise<void>[] = [];
  for (let at = 0; at < SIZE_BYTES; at += MAX_REQUEST_BYTES) {
    const lengthBytes = Math.min(MAX_REQUEST_BYTES, SIZE_BYTES - at);
    reads.push(read(at, lengthBytes).then((bytes) => out.set(bytes, at)));
  }
  await Promise.all(reads);
  return out;
}

function readDirect(device: BlockDevice): (guestOffset: number, lengthBytes: number) => Promise<Uint8Array> {
  return async (guestOffset, lengthBytes) => {
    const buf = new Uint8Array(lengthBytes);
    await device.read(guestOffset, buf);
    return buf;
  };
}

/** The index of the first byte where a and b differ, or -1 (a readable failure instead of a 6 MiB diff). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  return Buffer.compare(a, b) === 0 ? -1 : a.findIndex((byte, i) => byte !== b[i]);
}

export function exportConformance(name: string, harness: ExportHarness): void {
  describe(`Export conformance: ${name}`, () => {
    const subjects: Subject[] = [];

    /** A fresh qcow2 image (optionally written with `initial` and reopened read-only), served by the export. */
    async function serve(options: { initial?: Uint8Array; readOnly?: boolean } = {}): Promise<Subject> {
      const file = new MemoryHostFile(undefined, { name: 'export.qcow2' });
      await Qcow2Image.create(file, { sizeBytes: SIZE_BYTES });
      let image = await Qcow2Image.open(file);
      if (options.initial !== undefined) await image.write(0, options.initial);
      if (options.readOnly === true) {
        await image.close();
        image = await Qcow2Image.open(file.readOnlyView(), { readOnly: true });
      }
      const device = new InstrumentedDevice(image);
      const started = await harness.start(device);
      const subject = { file, image, device, started };
      subjects.push(subject);
      return subject;
    }

    /** Runs a test body, then stops the export and closes the image whatever happened. */
    function exportTest(title: string, body: () => Promise<void>): void {
      it(title, async () => {
        try {
          await body();
        } finally {
          for (const s of subjects.splice(0)) {
            s.device.releaseAll();
            await s.started.stop();
            await s.image.close();
          }
        }
      });
    }

    exportTest('data written through the export reads back through it, from the device and from the file after a flush', async () => {
      const { file, image, device, started } = await serve();
      const client = await started.connect();
      const random = new SeededRandom(0x5eed_0011);
      const model = new Uint8Array(SIZE_BYTES);
      const lastSector = SIZE_BYTES - SECTOR_BYTES;
      const lastCluster = SIZE_BYTES - MAX_REQUEST_BYTES;
      const steps: { guestOffset: number; lengthBytes: number; zero: boolean }[] = [
        { guestOffset: lastCluster, lengthBytes: MAX_REQUEST_BYTES, zero: false },
        { guestOffset: lastSector, lengthBytes: SECTOR_BYTES, zero: false },
        { guestOffset: 0, lengthBytes: SECTOR_BYTES, zero: false },
      ];
      for (let i = 0; i < 60; i++) steps.push({ ...randomRange(random), zero: random.bool(0.2) });
      steps.push({ guestOffset: lastCluster + 4 * KiB, lengthBytes: 8 * KiB, zero: true });
      for (const step of steps) {
        if (step.zero) {
          await client.writeZeroes(step.guestOffset, step.lengthBytes);
          model.fill(0, step.guestOffset, step.guestOffset + step.lengthBytes);
        } else {
          const data = filled(step.lengthBytes, random);
          await client.write(step.guestOffset, data);
          model.set(data, step.guestOffset);
        }
      }
      for (let i = 0; i < 40; i++) {
        const { guestOffset, lengthBytes } = randomRange(random);
        const got = await client.read(guestOffset, lengthBytes);
        expect(firstDifference(got, model.subarray(guestOffset, guestOffset + lengthBytes)), `read ${guestOffset}+${lengthBytes}`).toBe(-1);
      }
      expect(firstDifference(await client.read(lastSector, SECTOR_BYTES), model.subarray(lastSector))).toBe(-1);
      expect(firstDifference(await readAll((o, n) => client.read(o, n)), model)).toBe(-1);

      await client.flush();
      expect(firstDifference(await readAll(readDirect(image)), model)).toBe(-1);
      // What the flush made durable is in the file: a second, read-only opening of it reads the same.
      const reopened = await Qcow2Image.open(file.readOnlyView(), { readOnly: true });
      try {
        expect(firstDifference(await readAll(readDirect(reopened)), model)).toBe(-1);
      } finally {
        await reopened.close();
      }
      expect(device.outOfBounds).toEqual([]);
      await client.disconnect();
    });

    exportTest('an acknowledged write has completed on the device, and an acknowledged flush was called after the writes before it', async () => {
      const { device, started } = await serve();
      const client = await started.connect();
      const random = new SeededRandom(0xf1_0511);
      for (let round = 0; round < 3; round++) {
        const writes = Array.from({ length: 8 }, () => randomRange(random));
        await Promise.all(
          writes.map(async ({ guestOffset, lengthBytes }) => {
            await client.write(guestOffset, filled(lengthBytes, random));
            const done = device.events.some((e) => e.op === 'write' && e.phase === 'end' && e.guestOffset === guestOffset && e.lengthBytes === lengthBytes);
            expect(done, `write ${guestOffset}+${lengthBytes} acknowledged before the device completed it`).toBe(true);
          }),
        );
        const lastWriteEnd = device.events.map((e) => e.op === 'write' && e.phase === 'end').lastIndexOf(true);
        const flushesBefore = device.count('flush', 'end');
        const flushStartsBefore = device.count('flush', 'start');
        await client.flush();
        expect(device.count('flush', 'end')).toBeGreaterThan(flushesBefore);
        const flushStarts = device.events.flatMap((e, i) => (e.op === 'flush' && e.phase === 'start' ? [i] : []));
        expect(flushStarts[flushStartsBefore]).toBeGreaterThan(lastWriteEnd);
      }
      await client.disconnect();
    });

    exportTest('a read-only device: writes are refused with the protocol error, never reach it, and reads go on', async () => {
      const initial = filled(SIZE_BYTES, new SeededRandom(0x0e_ad01));
      const { device, started } = await serve({ initial, readOnly: true });
      const client = await started.connect();
      expect(firstDifference(await client.read(0, 4 * KiB), initial.subarray(0, 4 * KiB))).toBe(-1);
      await expectStatus(client.write(0, new Uint8Array(4 * KiB)), harness.errors.readOnly);
      await expectStatus(client.write(SIZE_BYTES - SECTOR_BYTES, new Uint8Array(SECTOR_BYTES)), harness.errors.readOnly);
      await expectStatus(client.writeZeroes(64 * KiB, 64 * KiB), harness.errors.readOnly);
      expect(firstDifference(await client.read(SIZE_BYTES - 8 * KiB, 8 * KiB), initial.subarray(SIZE_BYTES - 8 * KiB))).toBe(-1);
      expect(firstDifference(await readAll((o, n) => client.read(o, n)), initial)).toBe(-1);
      expect(device.events.filter((e) => e.op === 'write' || e.op === 'writeZeroes' || e.op === 'discard')).toEqual([]);
      await client.disconnect();
    });

    exportTest('a device error reaches the client as the protocol I/O error for that request only', async () => {
      const { device, started } = await serve();
      const client = await started.connect();
      const random = new SeededRandom(0xe1_0e1);
      const data = filled(16 * KiB, random);
      await client.write(128 * KiB, data);

      device.failNext('read');
      await expectStatus(client.read(128 * KiB, 16 * KiB), harness.errors.deviceIoError);
      expect(firstDifference(await client.read(128 * KiB, 16 * KiB), data)).toBe(-1);

      device.failNext('write');
      const lost = filled(16 * KiB, random);
      await expectStatus(client.write(128 * KiB, lost), harness.errors.deviceIoError);
      const next = filled(8 * KiB, random);
      await client.write(256 * KiB, next);
      expect(firstDifference(await client.read(256 * KiB, 8 * KiB), next)).toBe(-1);
      expect(firstDifference(await client.read(128 * KiB, 16 * KiB), data)).toBe(-1);

      device.failNext('writeZeroes');
      await expectStatus(client.writeZeroes(128 * KiB, 16 * KiB), harness.errors.deviceIoError);
      expect(firstDifference(await client.read(128 * KiB, 16 * KiB), data)).toBe(-1);

      device.failNext('flush');
      await expectStatus(client.flush(), harness.errors.deviceIoError);
      await client.flush();

      // Among requests in flight together, only the one the device failed reports the error.
      device.failNext('read');
      const outcomes = await Promise.allSettled(Array.from({ length: 8 }, () => client.read(128 * KiB, 16 * KiB)));
      const failed = outcomes.filter((o) => o.status === 'rejected');
      expect(failed.length).toBe(1);
      expect((failed[0] as PromiseRejectedResult).reason).toMatchObject({ status: harness.errors.deviceIoError });
      for (const o of outcomes) if (o.status === 'fulfilled') expect(firstDifference(o.value, data)).toBe(-1);
      await client.disconnect();
    });

    exportTest('out-of-range requests are refused with the protocol error and never reach the device', async () => {
      const { device, started } = await serve();
      const client = await started.connect();
      const before = device.events.length;
      const { errors } = harness;
      const beyond = [
        { guestOffset: SIZE_BYTES, lengthBytes: SECTOR_BYTES }, // just past the end
        { guestOffset: SIZE_BYTES - SECTOR_BYTES, lengthBytes: 2 * SECTOR_BYTES }, // straddles the end
        { guestOffset: SIZE_BYTES - 4 * KiB, lengthBytes: 64 * KiB },
        { guestOffset: 2 ** 40, lengthBytes: 4 * KiB }, // far beyond
      ];
      for (const { guestOffset, lengthBytes } of beyond) {
        await expectStatus(client.read(guestOffset, lengthBytes), errors.readOutOfRange);
        await expectStatus(client.write(guestOffset, new Uint8Array(lengthBytes).fill(0xee)), errors.writeOutOfRange);
        await expectStatus(client.writeZeroes(guestOffset, lengthBytes), errors.writeOutOfRange);
      }
      expect(device.events.slice(before)).toEqual([]);
      // The connection still serves requests within range, and the last block is untouched.
      expect(firstDifference(await client.read(SIZE_BYTES - 4 * KiB, 4 * KiB), new Uint8Array(4 * KiB))).toBe(-1);
      expect(device.outOfBounds).toEqual([]);
      await client.disconnect();
    });

    exportTest('requestShutdown lets the request in flight finish, serves nothing new, and closed resolves after it', async () => {
      const { image, device, started } = await serve();
      const { exp } = started;
      const client = await started.connect();
      const random = new SeededRandom(0x5407);
      const data = filled(32 * KiB, random);
      const held = device.holdNext('write');
      const inFlight = client.write(512 * KiB, data);
      await held.entered;

      // `closed` may resolve before the client has read the last reply (it is on its way), but never
      // before the device completed the held write.
      let closedResolved = false;
      let writeDoneWhenClosed: boolean | undefined;
      void exp.closed.then(() => {
        closedResolved = true;
        writeDoneWhenClosed = device.events.some((e) => e.op === 'write' && e.phase === 'end');
      });
      exp.requestShutdown();
      const eventsAtShutdown = device.events.length;
      const late = client.read(0, 4 * KiB);
      await expect(started.connect()).rejects.toThrow();
      exp.requestShutdown();
      expect(closedResolved).toBe(false);

      held.release();
      await inFlight;
      await expectClosed(late);
      await exp.closed;
      exp.requestShutdown();
      expect(writeDoneWhenClosed).toBe(true);
      // Only the held write finished after the shutdown; the late read never reached the device.
      expect(device.events.slice(eventsAtShutdown)).toEqual([{ op: 'write', phase: 'end', guestOffset: 512 * KiB, lengthBytes: 32 * KiB }]);
      expect(firstDifference(await readDirect(image)(512 * KiB, 32 * KiB), data)).toBe(-1);
      await client.disconnect();
    });

    exportTest('a client that goes away with a request in flight: the request completes on the device and the next client is served', async () => {
      const { device, started } = await serve();
      const first = await started.connect();
      const random = new SeededRandom(0x90_4e);
      const data = filled(16 * KiB, random);
      const held = device.holdNext('write');
      const orphan = first.write(64 * KiB, data).catch(() => undefined); // answered or not: the client left
      await held.entered;
      const gone = first.disconnect();
      const second = started.connect();
      held.release();
      await Promise.all([gone, orphan]);
      const next = await second;
      expect(firstDifference(await next.read(64 * KiB, 16 * KiB), data)).toBe(-1);
      const more = filled(8 * KiB, random);
      await next.write(SIZE_BYTES - 8 * KiB, more);
      expect(firstDifference(await next.read(SIZE_BYTES - 8 * KiB, 8 * KiB), more)).toBe(-1);
      await next.disconnect();
    });

    exportTest(`${QUEUE_DEPTH} requests in flight at once all complete with the right data`, async () => {
      const { device, started } = await serve();
      const client = await started.connect();
      const random = new SeededRandom(0x0d_0032);
      const slotBytes = SIZE_BYTES / QUEUE_DEPTH - ((SIZE_BYTES / QUEUE_DEPTH) % SECTOR_BYTES);
      const regions = Array.from({ length: QUEUE_DEPTH }, (_, i) => {
        const lengthBytes = random.intBetween(1, Math.min(MAX_REQUEST_BYTES, slotBytes) / SECTOR_BYTES) * SECTOR_BYTES;
        return { guestOffset: i * slotBytes + random.int((slotBytes - lengthBytes) / SECTOR_BYTES + 1) * SECTOR_BYTES, data: filled(lengthBytes, random) };
      });
      // The device holds every call until all of them arrived: the export must have taken them at once.
      device.holdUntilConcurrent(QUEUE_DEPTH);
      await Promise.all(regions.map((r) => client.write(r.guestOffset, r.data)));
      device.holdUntilConcurrent(QUEUE_DEPTH);
      const got = await Promise.all(regions.map((r) => client.read(r.guestOffset, r.data.length)));
      regions.forEach((r, i) => expect(firstDifference(got[i]!, r.data), `region ${i}`).toBe(-1));
      expect(device.maxInFlight).toBe(QUEUE_DEPTH);

      // Reads and writes mixed, each region either rewritten or read, all at once.
      const rewrites = regions.map((r) => ({ ...r, data: random.bool() ? filled(r.data.length, random) : undefined }));
      const mixed = await Promise.all(rewrites.map((r, i) => (r.data === undefined ? client.read(r.guestOffset, regions[i]!.data.length) : client.write(r.guestOffset, r.data))));
      rewrites.forEach((r, i) => {
        if (r.data === undefined) expect(firstDifference(mixed[i] as Uint8Array, regions[i]!.data), `region ${i}`).toBe(-1);
      });
      for (const [i, r] of rewrites.entries()) {
        const want = r.data ?? regions[i]!.data;
        expect(firstDifference(await client.read(r.guestOffset, want.length), want), `region ${i}`).toBe(-1);
      }
      await client.disconnect();
    });
  });
}

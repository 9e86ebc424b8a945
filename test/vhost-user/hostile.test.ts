/**
 * Hostile guests against Strata's vhost-user-blk back-end (VhostUserBlkExport serving a qcow2
 * image in this process), driven by the TypeScript front-end's raw chain API.
 *
 * Outcome rules (what a case may end in):
 *  - A chain that breaks the ring protocol (descriptor outside guest memory, crossing a region's
 *    end, loops, next out of range, nested indirect, indirect table of bad length, readable after
 *    writable, avail idx jumping ahead, head out of range) -> the device stops that queue
 *    (virtqueue marked broken, DEVICE_NEEDS_RESET style) or completes the chain with IOERR.
 *    A dropped chain on a queue that keeps serving (the guest's request silently lost) fails.
 *  - A well-formed chain whose request is wrong (sectors past the end, huge or wrapping sector
 *    numbers, discard/write-zeroes segments past the end, no status byte to write...) -> IOERR
 *    (or UNSUPP) status, the queue keeps going; without a status byte: queue stopped or IOERR.
 *  - In every case: no guest byte outside the chain's writable buffers changes, no byte of the
 *    volume changes (the whole image is compared with a model at the end, and `qemu-img check`
 *    must pass), the same process keeps serving a second export meanwhile, and a new connection to
 *    the first export works afterwards.
 * The outcome each case actually had is printed (console.info) as the record of which rule applied.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireTool } from '../support/tools.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { BlkStatus, BlkType, DescFlag, VhostUserFrontend, type GuestBuffer, type RawDescriptor } from './frontend.js';
import { chainOutcome, race, SETTLE_MS, snapshot, strayWrites, type ByteRange, type ChainOutcome } from './hostile-helpers.js';
import { checkImage, disconnected, imageContents, serveStrata, type StrataTarget } from './strata-target.js';

const MiB = 1024 * 1024;
const SIZE_BYTES = 16 * MiB;
const SECTORS = SIZE_BYTES / 512;
const FILL_A = 0x3c;
const FILL_B = 0x5d;
const QUEUE_SIZE = 16;

const R = 0;
const { NEXT, WRITE, INDIRECT } = DescFlag;

type Allowed = 'ioerr' | 'unsupp' | 'ok' | 'stopped' | 'closed';

interface Built {
  descs: RawDescriptor[];
  /** where the status byte would go (if the chain has one we can read) */
  status?: GuestBuffer;
  /** guest ranges the device may write */
  writable: ByteRange[];
}

const record: string[] = [];

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('hostile guests against Strata vhost-user-blk', () => {
  let tmp: { path: string; cleanup: () => void };
  let a: StrataTarget;
  let b: StrataTarget;
  /** expected contents of volume A */
  const model = Buffer.alloc(SIZE_BYTES, FILL_A);
  let probeRound = 0;

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    a = await serveStrata(tmp.path, 'a', { sizeBytes: SIZE_BYTES, fill: FILL_A, queueCount: 2 });
    b = await serveStrata(tmp.path, 'b', { sizeBytes: SIZE_BYTES, fill: FILL_B, queueCount: 1 });
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    if (record.length > 0) console.info(`hostile outcomes:\n${record.join('\n')}`);
    tmp?.cleanup();
  });

  async function connectA(): Promise<VhostUserFrontend> {
    await disconnected(a);
    return VhostUserFrontend.connect(a.socketPath, {
      queueCount: 2,
      queueSize: QUEUE_SIZE,
      queueDepth: 4,
      maxRequestBytes: 64 * 1024,
      regionCount: 2,
      scratchBytes: 512 * 1024,
      indirect: true,
    });
  }

  /** The other export in the same process serves while A's connection is in a bad state. */
  async function expectOtherExportServes(): Promise<void> {
    await disconnected(b);
    const fb = await VhostUserFrontend.connect(b.socketPath, { queueDepth: 2, maxRequestBytes: 4096 });
    try {
      const got = await fb.read(SECTORS - 8, 4096);
      expect(got.every((x) => x === FILL_B)).toBe(true);
    } finally {
      fb.close();
    }
  }

  /** A fresh connection to A works: write a pattern, read it back (and record it in the model). */
  async function expectFreshConnectionWorks(): Promise<void> {
    const fe = await connectA();
    try {
      const sector = 64 + 8 * (probeRound++ % 64);
      const data = Buffer.alloc(4096, 0x80 + (probeRound % 64));
      await fe.write(sector, data, 1);
      await fe.flush(0);
      expect(Buffer.from(await fe.read(sector, 4096, 0)).equals(data)).toBe(true);
      data.copy(model, sector * 512);
    } finally {
      fe.close();
    }
  }

  async function runChain(name: string, allowed: Allowed[], build: (fe: VhostUserFrontend) => Built): Promise<void> {
    const fe = await connectA();
    let outcome: ChainOutcome;
    let label: string;
    let stray: string[] = [];
    try {
      const built = build(fe);
      if (built.status) built.status.bytes[0] = 0xff;
      const { done } = fe.submitChain(built.descs, { queue: 0 });
      // after publishing (the back-end runs on this event loop: it has not looked yet)
      const snap = snapshot(fe);
      outcome = await chainOutcome(fe, done, 0, () => {
        stray = strayWrites(fe, snap, built.writable);
      });
      label = outcome.kind;
      if (outcome.kind === 'completed') {
        const s = built.status?.bytes[0];
        label = s === BlkStatus.OK ? 'ok' : s === BlkStatus.IOERR ? 'ioerr' : s === BlkStatus.UNSUPP ? 'unsupp' : `status ${s}`;
      }
      record.push(`- ${name}: ${label}${outcome.kind === 'completed' ? ` (used.len ${outcome.writtenBytes})` : ''}`);
      expect(stray, `${name}: guest memory written outside the chain's writable buffers`).toEqual([]);
      expect(allowed, `${name}: outcome ${label}`).toContain(label);
      if (outcome.kind !== 'closed') {
        // The other queue of the same device keeps serving unless the whole device was stopped.
        const other = await race(fe.read(0, 512, 1).then(() => 'ok' as const, () => 'failed' as const), SETTLE_MS);
        record.push(`  queue 1 afterwards: ${other}`);
      }
      await expectOtherExportServes();
    } finally {
      fe.close();
    }
    await expectFreshConnectionWorks();
  }

  function hdr(fe: VhostUserFrontend, type: number, sector: bigint | number): RawDescriptor {
    return { addr: fe.scratchHeader(type, sector).guestAddr, len: 16, flags: NEXT };
  }

  function statusBuf(fe: VhostUserFrontend): GuestBuffer {
    return fe.allocScratch(1, 1);
  }

  function region0End(fe: VhostUserFrontend): bigint {
    const r = fe.memoryRegions[0]!;
    return r.guestAddr + r.sizeBytes;
  }

  const STRUCTURAL: Allowed[] = ['ioerr', 'stopped', 'closed'];

  // ----------------------------------------------------------------- addresses and lengths

  it('data descriptor outside every memory region', async () => {
    await runChain('read into an address past guest memory', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      return {
        descs: [hdr(fe, BlkType.IN, 0), { addr: fe.guestEnd + BigInt(MiB), len: 4096, flags: NEXT | WRITE }, { addr: st.guestAddr, len: 1, flags: WRITE }],
        status: st,
        writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
      };
    });
  });

  it('data descriptor in the gap between two regions', async () => {
    await runChain('read into the gap between regions', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      return {
        descs: [hdr(fe, BlkType.IN, 0), { addr: region0End(fe) + 4096n, len: 512, flags: NEXT | WRITE }, { addr: st.guestAddr, len: 1, flags: WRITE }],
        status: st,
        writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
      };
    });
  });

  it('data descriptor crossing the end of a region', async () => {
    await runChain('read crossing region 0 end', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      return {
        descs: [hdr(fe, BlkType.IN, 0), { addr: region0End(fe) - 2048n, len: 4096, flags: NEXT | WRITE }, { addr: st.guestAddr, len: 1, flags: WRITE }],
        status: st,
        writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
      };
    });
  });

  it('write whose source crosses the end of guest memory', async () => {
    await runChain('write from a buffer crossing the end of memory', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      return {
        descs: [hdr(fe, BlkType.OUT, 0), { addr: fe.guestEnd - 512n, len: 4096, flags: NEXT }, { addr: st.guestAddr, len: 1, flags: WRITE }],
        status: st,
        writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
      };
    });
  });

  it('descriptor address that wraps around 2^64, and a 4 GiB - 1 length', async () => {
    await runChain('address wrapping 2^64', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      return {
        descs: [hdr(fe, BlkType.IN, 0), { addr: 0xffff_ffff_ffff_f000n, len: 8192, flags: NEXT | WRITE }, { addr: st.guestAddr, len: 1, flags: WRITE }],
        status: st,
        writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
      };
    });
    await runChain('length 0xffffffff', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      const buf = fe.allocScratch(4096);
      return {
        descs: [hdr(fe, BlkType.IN, 0), { addr: buf.guestAddr, len: 0xffff_ffff, flags: NEXT | WRITE }, { addr: st.guestAddr, len: 1, flags: WRITE }],
        status: st,
        writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
      };
    });
  });

  it('out header outside guest memory', async () => {
    await runChain('header outside memory', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      return {
        descs: [{ addr: fe.guestEnd + 4096n, len: 16, flags: NEXT }, { addr: st.guestAddr, len: 1, flags: WRITE }],
        status: st,
        writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
      };
    });
  });

  // ----------------------------------------------------------------- chain shape

  it('loops: a descriptor pointing at itself, two pointing at each other', async () => {
    await runChain('self loop', STRUCTURAL, (fe) => ({ descs: [{ ...hdr(fe, BlkType.IN, 0), next: 0 }], writable: [] }));
    await runChain('two-descriptor loop', STRUCTURAL, (fe) => {
      const buf = fe.allocScratch(512);
      return {
        descs: [hdr(fe, BlkType.IN, 0), { addr: buf.guestAddr, len: 512, flags: NEXT | WRITE, next: 0 }],
        writable: [{ guestAddr: buf.guestAddr, lengthBytes: 512 }],
      };
    });
  });

  it('a chain through every descriptor of the ring and back (longer than the queue)', async () => {
    await runChain('chain of queue size looping to its head', STRUCTURAL, (fe) => {
      const bufs: RawDescriptor[] = [];
      const writable: ByteRange[] = [];
      for (let i = 1; i < QUEUE_SIZE; i++) {
        const buf = fe.allocScratch(512);
        writable.push({ guestAddr: buf.guestAddr, lengthBytes: 512 });
        bufs.push({ addr: buf.guestAddr, len: 512, flags: NEXT | WRITE, next: i + 1 < QUEUE_SIZE ? i + 1 : 0 });
      }
      return { descs: [hdr(fe, BlkType.IN, 0), ...bufs], writable };
    });
  });

  it('next index beyond the ring', async () => {
    await runChain('next out of range', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      return {
        descs: [{ ...hdr(fe, BlkType.IN, 0), next: 1000 }, { addr: st.guestAddr, len: 1, flags: WRITE }],
        status: st,
        writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
      };
    });
  });

  it('readable descriptor after a writable one', async () => {
    await runChain('readable after writable', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      const data = fe.allocScratch(512);
      return {
        descs: [hdr(fe, BlkType.OUT, 0), { addr: st.guestAddr, len: 1, flags: NEXT | WRITE }, { addr: data.guestAddr, len: 512, flags: R }],
        status: st,
        writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
      };
    });
  });

  it('no status byte: header only; write without a writable descriptor; zero-length status', async () => {
    const noStatus: Allowed[] = ['ioerr', 'stopped', 'closed'];
    await runChain('header only', noStatus, (fe) => ({ descs: [{ ...hdr(fe, BlkType.FLUSH, 0), flags: R }], writable: [] }));
    await runChain('write without status', noStatus, (fe) => {
      const data = fe.allocScratch(512);
      data.bytes.fill(FILL_A); // the volume's own contents: whether or not the device writes it, the model holds
      return { descs: [hdr(fe, BlkType.OUT, 100), { addr: data.guestAddr, len: 512, flags: R }], writable: [] };
    });
    await runChain('zero-length status descriptor', noStatus, (fe) => {
      const st = statusBuf(fe);
      return { descs: [hdr(fe, BlkType.FLUSH, 0), { addr: st.guestAddr, len: 0, flags: WRITE }], status: st, writable: [] };
    });
  });

  it('out header shorter than 16 bytes', async () => {
    await runChain('8-byte header', ['ioerr', 'unsupp', 'stopped', 'closed'], (fe) => {
      const st = statusBuf(fe);
      return {
        descs: [{ ...hdr(fe, BlkType.IN, 0), len: 8 }, { addr: st.guestAddr, len: 1, flags: WRITE }],
        status: st,
        writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
      };
    });
  });

  it('a header split over two descriptors is valid (the device must not assume a layout)', async () => {
    await runChain('header in two 8-byte descriptors', ['ok'], (fe) => {
      const h = fe.scratchHeader(BlkType.IN, 8);
      const data = fe.allocScratch(512);
      const st = statusBuf(fe);
      return {
        descs: [
          { addr: h.guestAddr, len: 8, flags: NEXT },
          { addr: h.guestAddr + 8n, len: 8, flags: NEXT },
          { addr: data.guestAddr, len: 512, flags: NEXT | WRITE },
          { addr: st.guestAddr, len: 1, flags: WRITE },
        ],
        status: st,
        writable: [
          { guestAddr: data.guestAddr, lengthBytes: 512 },
          { guestAddr: st.guestAddr, lengthBytes: 1 },
        ],
      };
    });
  });

  // ----------------------------------------------------------------- indirect tables

  it('nested indirect table', async () => {
    await runChain('indirect inside indirect', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      const inner = fe.scratchIndirectTable([{ ...hdr(fe, BlkType.FLUSH, 0) }, { addr: st.guestAddr, len: 1, flags: WRITE }]);
      const outer = fe.scratchIndirectTable([{ addr: inner.guestAddr, len: 32, flags: INDIRECT }]);
      return { descs: [{ addr: outer.guestAddr, len: 16, flags: INDIRECT }], status: st, writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }] };
    });
  });

  it('indirect table with a length that is not a multiple of 16, zero, or outside memory', async () => {
    for (const [name, len, outside] of [
      ['indirect len 24', 24, false],
      ['indirect len 0', 0, false],
      ['indirect table outside memory', 32, true],
    ] as const) {
      await runChain(name, STRUCTURAL, (fe) => {
        const st = statusBuf(fe);
        const table = fe.scratchIndirectTable([{ ...hdr(fe, BlkType.FLUSH, 0) }, { addr: st.guestAddr, len: 1, flags: WRITE }]);
        return {
          descs: [{ addr: outside ? fe.guestEnd + 16n : table.guestAddr, len, flags: INDIRECT }],
          status: st,
          writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
        };
      });
    }
  });

  it('indirect table whose entries loop, and one with more than 1024 entries', async () => {
    await runChain('indirect entries looping', STRUCTURAL, (fe) => {
      const buf = fe.allocScratch(512);
      const table = fe.scratchIndirectTable([
        { ...hdr(fe, BlkType.IN, 0), next: 1 },
        { addr: buf.guestAddr, len: 512, flags: NEXT | WRITE, next: 0 },
      ]);
      return { descs: [{ addr: table.guestAddr, len: 32, flags: INDIRECT }], writable: [{ guestAddr: buf.guestAddr, lengthBytes: 512 }] };
    });
    await runChain('indirect table of 1100 entries', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      const entries: RawDescriptor[] = [hdr(fe, BlkType.OUT, 0)];
      for (let i = 0; i < 1098; i++) entries.push({ addr: st.guestAddr, len: 0, flags: NEXT });
      entries.push({ addr: st.guestAddr, len: 1, flags: WRITE });
      const table = fe.scratchIndirectTable(entries);
      return { descs: [{ addr: table.guestAddr, len: 16 * entries.length, flags: INDIRECT }], status: st, writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }] };
    });
  });

  it('INDIRECT together with NEXT on a ring descriptor', async () => {
    await runChain('INDIRECT|NEXT', STRUCTURAL, (fe) => {
      const st = statusBuf(fe);
      const table = fe.scratchIndirectTable([{ ...hdr(fe, BlkType.FLUSH, 0) }, { addr: st.guestAddr, len: 1, flags: WRITE }]);
      return {
        descs: [{ addr: table.guestAddr, len: 32, flags: INDIRECT | NEXT }, { addr: st.guestAddr, len: 1, flags: WRITE }],
        status: st,
        writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
      };
    });
  });

  // ----------------------------------------------------------------- request contents

  it('huge and wrapping sector numbers, I/O crossing the end of the volume', async () => {
    for (const [name, type, sector, bytes] of [
      ['read at sector 2^63', BlkType.IN, 2n ** 63n, 512],
      ['read at sector 2^64-1', BlkType.IN, 2n ** 64n - 1n, 512],
      ['read at sector 2^55 (byte offset wraps 2^64)', BlkType.IN, 2n ** 55n, 4096],
      ['write at sector 2^64-1', BlkType.OUT, 2n ** 64n - 1n, 1024],
      ['write crossing the end', BlkType.OUT, BigInt(SECTORS - 1), 1024],
      ['read crossing the end', BlkType.IN, BigInt(SECTORS - 1), 1024],
      ['read starting at the end', BlkType.IN, BigInt(SECTORS), 512],
    ] as const) {
      await runChain(name, ['ioerr'], (fe) => {
        const st = statusBuf(fe);
        const data = fe.allocScratch(bytes);
        data.bytes.fill(0xee);
        return {
          descs: [hdr(fe, type, sector), { addr: data.guestAddr, len: bytes, flags: NEXT | (type === BlkType.IN ? WRITE : R) }, { addr: st.guestAddr, len: 1, flags: WRITE }],
          status: st,
          // a read that fails may have filled part of its buffer
          writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }, ...(type === BlkType.IN ? [{ guestAddr: data.guestAddr, lengthBytes: bytes }] : [])],
        };
      });
    }
  });

  it('discard and write-zeroes segments past the end, wrapping, or too many', async () => {
    const seg = (sector: bigint, sectors: number, flags = 0): number[] => [Number(sector & 0xffffffffn), Number(sector >> 32n), sectors, flags];
    for (const [name, type, segs] of [
      ['discard past the end', BlkType.DISCARD, [seg(BigInt(SECTORS - 8), 16)]],
      ['write zeroes past the end', BlkType.WRITE_ZEROES, [seg(BigInt(SECTORS - 8), 16)]],
      ['write zeroes (unmap) wrapping 2^64', BlkType.WRITE_ZEROES, [seg(2n ** 64n - 8n, 16, 1)]],
      ['discard, second segment past the end', BlkType.DISCARD, [seg(0n, 8), seg(BigInt(SECTORS), 8)]],
      ['discard with 300 segments', BlkType.DISCARD, Array.from({ length: 300 }, (_, i) => seg(BigInt(8 * i), 8))],
      ['write zeroes with unknown flag bits', BlkType.WRITE_ZEROES, [seg(0n, 8, 0xfe)]],
      ['discard with a partial segment (20 bytes)', BlkType.DISCARD, 'partial'],
    ] as const) {
      await runChain(name, ['ioerr', 'unsupp'], (fe) => {
        const st = statusBuf(fe);
        const list = segs === 'partial' ? [seg(0n, 8)] : segs;
        const data = fe.allocScratch(16 * list.length);
        const dv = new DataView(data.bytes.buffer, data.bytes.byteOffset, data.bytes.byteLength);
        list.forEach((s, i) => s.forEach((v, k) => dv.setUint32(16 * i + 4 * k, v >>> 0, true)));
        return {
          descs: [hdr(fe, type, 0), { addr: data.guestAddr, len: segs === 'partial' ? 20 : data.bytes.length, flags: NEXT }, { addr: st.guestAddr, len: 1, flags: WRITE }],
          status: st,
          writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }],
        };
      });
    }
  });

  it('GET_ID into a buffer shorter than 20 bytes writes nothing past it', async () => {
    await runChain('GET_ID into 8 bytes', ['ok', 'ioerr'], (fe) => {
      const st = statusBuf(fe);
      const id = fe.allocScratch(64);
      id.bytes.fill(0xee);
      return {
        descs: [hdr(fe, BlkType.GET_ID, 0), { addr: id.guestAddr, len: 8, flags: NEXT | WRITE }, { addr: st.guestAddr, len: 1, flags: WRITE }],
        status: st,
        writable: [
          { guestAddr: id.guestAddr, lengthBytes: 8 },
          { guestAddr: st.guestAddr, lengthBytes: 1 },
        ],
      };
    });
  });

  it('unknown request type gets UNSUPP', async () => {
    await runChain('request type 0x7fff', ['unsupp'], (fe) => {
      const st = statusBuf(fe);
      return { descs: [hdr(fe, 0x7fff, 0), { addr: st.guestAddr, len: 1, flags: WRITE }], status: st, writable: [{ guestAddr: st.guestAddr, lengthBytes: 1 }] };
    });
  });

  // ----------------------------------------------------------------- avail ring

  it('avail idx jumping ahead by more than the queue size, and a head out of range', async () => {
    for (const jump of ['idx', 'head'] as const) {
      const fe = await connectA();
      try {
        const q = fe.queue(0);
        const usedBefore = new DataView(q.used.bytes.buffer, q.used.bytes.byteOffset).getUint16(2, true);
        if (jump === 'idx') {
          fe.setAvailIdx(0, q.availIdx + 1000);
        } else {
          const ring = new DataView(q.avail.bytes.buffer, q.avail.bytes.byteOffset, q.avail.bytes.byteLength);
          ring.setUint16(4 + 2 * (q.availIdx % QUEUE_SIZE), 1000, true);
          fe.setAvailIdx(0, q.availIdx + 1);
        }
        const snap = snapshot(fe); // after our own ring writes; the back-end has not run yet
        await new Promise((r) => setTimeout(r, SETTLE_MS));
        const usedAfter = new DataView(q.used.bytes.buffer, q.used.bytes.byteOffset).getUint16(2, true);
        record.push(`- avail ${jump} jump: used.idx ${usedBefore} -> ${usedAfter}, connected ${fe.connected}`);
        expect(strayWrites(fe, snap, [])).toEqual([]);
        // No request was really made: the device must not have returned anything.
        expect(usedAfter).toBe(usedBefore);
        await expectOtherExportServes();
      } finally {
        fe.close();
      }
      await expectFreshConnectionWorks();
    }
  });

  // ----------------------------------------------------------------- lifecycle

  it('several stop/start cycles on one connection, replaced kick/call fds, a reset with new features', async () => {
    await disconnected(a);
    const fe = await VhostUserFrontend.connect(a.socketPath, { queueCount: 2, eventIdx: false, queueDepth: 8, maxRequestBytes: 64 * 1024 });
    try {
      for (let cycle = 0; cycle < 5; cycle++) {
        const sector = 2048 + cycle * 64;
        const data = Buffer.alloc(8192, 0x10 + cycle);
        await Promise.all([fe.write(sector, data, 0), fe.write(sector + 16, data, 1)]);
        data.copy(model, sector * 512);
        data.copy(model, (sector + 16) * 512);
        const bases = await fe.stop();
        expect(bases).toEqual([fe.queue(0).availIdx, fe.queue(1).availIdx]);
        await fe.start({ replaceFds: cycle % 2 === 1, eventIdx: cycle >= 2, indirect: cycle === 3, fresh: cycle === 2 });
        expect(Buffer.from(await fe.read(sector, 8192, 1)).equals(data)).toBe(true);
        expect(Buffer.from(await fe.read(sector + 16, 8192, 0)).equals(data)).toBe(true);
      }
      // A stopped ring must not be served: requests published while stopped complete only after start.
      await fe.stop();
      const pending = fe.read(2048, 512, 0);
      // the kick goes to the (stopped) back-end; nothing may come back
      expect(await race(pending.then(() => 'done' as const), SETTLE_MS)).toBe('timeout');
      await fe.start();
      fe.kick(0);
      expect((await pending)[0]).toBe(0x10);
    } finally {
      fe.close();
    }
  });

  it('the volume holds exactly what valid requests wrote, and qemu-img check passes', async () => {
    await a.close();
    const got = imageContents(tmp.path, a.imagePath);
    expect(got.length).toBe(SIZE_BYTES);
    let firstDiff = -1;
    for (let i = 0; i < SIZE_BYTES; i++) {
      if (got[i] !== model[i]) {
        firstDiff = i;
        break;
      }
    }
    expect(firstDiff, 'first byte that differs from the model').toBe(-1);
    expect(checkImage(a.imagePath)).toContain('No errors were found');
  });
});

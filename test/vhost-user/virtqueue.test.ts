/**
 * SplitVirtqueue and GuestMemory: ring parsing against a pretend guest (fake-guest.ts: guest RAM in
 * ArrayBuffers, since these tests are about parsing, not mapping), every hostile-ring case we
 * refuse, EVENT_IDX arithmetic including u16 wrap, and GuestMemory itself over real memfds.
 */
import { describe, expect, it } from 'vitest';
import { closeFd } from '../../src/sys/fd.js';
import { memfdCreate } from '../../src/sys/memfd.js';
import { mapShared } from '../../src/sys/mmap.js';
import { GuestMemory, MAX_MEMORY_REGIONS, PIECE_OVERLAP_BYTES, PIECE_STRIDE_BYTES } from '../../src/export/vhost-user/memory.js';
import {
  SplitVirtqueue,
  splitRingSizes,
  VirtqueueError,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_USED_F_NO_NOTIFY,
} from '../../src/export/vhost-user/virtqueue.js';
import { FakeDriver, FakeGuestMemory } from './fake-guest.js';

const RAM_BASE = 0x10_0000;
const RAM_BYTES = 4 * 1024 * 1024;

function setup(options: { queueSize?: number; eventIdx?: boolean; initialIdx?: number } = {}) {
  const mem = new FakeGuestMemory();
  mem.addRegion(RAM_BASE, RAM_BYTES);
  const driver = new FakeDriver(mem, options.queueSize ?? 8, RAM_BASE, options.eventIdx ?? false, options.initialIdx ?? 0);
  return { mem, driver };
}

function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (seed + i * 7) & 0xff;
  return out;
}

function expectBroken(vq: SplitVirtqueue, pattern: RegExp): void {
  expect(() => vq.pop()).toThrow(VirtqueueError);
  expect(vq.broken).toMatch(pattern);
  // A broken queue stays quiet: no second parse of hostile memory.
  expect(vq.pop()).toBeUndefined();
  expect(vq.hasAvailable()).toBe(false);
}

describe('SplitVirtqueue: well-formed rings', () => {
  it('pops a direct chain whose views alias guest memory, then nothing', () => {
    const { mem, driver } = setup();
    const header = bytes(16, 1);
    const head = driver.addDirect([{ lengthBytes: 16, data: header }, { lengthBytes: 4096, write: true }, { lengthBytes: 1, write: true }]);
    driver.publish(head);
    const vq = driver.queue(mem);
    expect(vq.hasAvailable()).toBe(true);
    const chain = vq.pop()!;
    expect(chain.head).toBe(head);
    expect(chain.readable.map((v) => v.length)).toEqual([16]);
    expect(chain.writable.map((v) => v.length)).toEqual([4096, 1]);
    expect(chain.readableBytes).toBe(16);
    expect(chain.writableBytes).toBe(4097);
    expect(chain.readable[0]).toEqual(header);
    // Writing through a view lands in guest RAM.
    chain.writable[1]![0] = 0xab;
    expect(vq.pop()).toBeUndefined();
    expect(vq.hasAvailable()).toBe(false);
    expect(vq.inFlightCount).toBe(1);
    const statusAddr = chain.writable[1]!.byteOffset + RAM_BASE; // fake RAM starts at byte 0 of its buffer
    expect(mem.at(statusAddr, 1)[0]).toBe(0xab);
  });

  it('pushUsed writes {id, len} before idx, and pops several chains in order', () => {
    const { mem, driver } = setup();
    const heads = [0, 1, 2].map((i) => driver.addDirect([{ lengthBytes: 16, data: bytes(16, i) }, { lengthBytes: 1, write: true }]));
    for (const h of heads) driver.publish(h);
    const vq = driver.queue(mem);
    const popped = [vq.pop()!, vq.pop()!, vq.pop()!];
    expect(popped.map((c) => c.head)).toEqual(heads);
    expect(vq.pop()).toBeUndefined();
    // Complete out of order: the split ring allows it.
    vq.pushUsed(popped[2]!.head, 1);
    vq.pushUsed(popped[0]!.head, 7);
    expect(driver.usedIdx()).toBe(2);
    expect(driver.usedElem(0)).toEqual({ id: heads[2], len: 1 });
    expect(driver.usedElem(1)).toEqual({ id: heads[0], len: 7 });
    expect(vq.usedIdx).toBe(2);
    expect(vq.lastAvailIdx).toBe(3);
    expect(vq.inFlightCount).toBe(1);
  });

  it('pops an indirect chain, and a direct prefix that ends in an indirect descriptor', () => {
    const { mem, driver } = setup({ queueSize: 4 });
    const head = driver.addIndirect([
      { lengthBytes: 16, data: bytes(16, 3) },
      { lengthBytes: 512, data: bytes(512, 4) },
      { lengthBytes: 8192, write: true },
      { lengthBytes: 1, write: true },
    ]);
    driver.publish(head);
    // Direct header descriptor, then an indirect one holding data + status (spec 2.7.5.3.2).
    const [hdr, data, status] = driver.buffers([{ lengthBytes: 16, data: bytes(16, 9) }, { lengthBytes: 4096 }, { lengthBytes: 1 }]);
    const table = driver.alloc(32);
    driver.writeDesc(table, 0, data!, 4096, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    driver.writeDesc(table, 1, status!, 1, VIRTQ_DESC_F_WRITE, 0);
    driver.writeDesc(driver.descAddr, 2, hdr!, 16, VIRTQ_DESC_F_NEXT, 3);
    // WRITE on an indirect descriptor is ignored, as the spec requires.
    driver.writeDesc(driver.descAddr, 3, table, 32, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
    driver.publish(2);

    const vq = driver.queue(mem);
    const a = vq.pop()!;
    expect(a.head).toBe(head);
    expect(a.readable.map((v) => v.length)).toEqual([16, 512]);
    expect(a.readable[1]).toEqual(bytes(512, 4));
    expect(a.writable.map((v) => v.length)).toEqual([8192, 1]);
    const b = vq.pop()!;
    expect(b.head).toBe(2);
    expect(b.readable[0]).toEqual(bytes(16, 9));
    expect(b.writable.map((v) => v.length)).toEqual([4096, 1]);
  });

  it('splits a buffer that crosses into an adjacent region, and skips zero-length descriptors', () => {
    const { mem, driver } = setup();
    const second = mem.addRegion(RAM_BASE + RAM_BYTES, 65536);
    second.set(bytes(100, 5).subarray(50), 0);
    const crossing = RAM_BASE + RAM_BYTES - 50;
    mem.at(crossing, 50).set(bytes(100, 5).subarray(0, 50));
    const head = driver.addDirect([
      { lengthBytes: 0, guestAddr: 0xdead_0000 }, // never translated
      { lengthBytes: 100, guestAddr: crossing },
      { lengthBytes: 1, write: true },
    ]);
    driver.publish(head);
    const chain = driver.queue(mem).pop()!;
    expect(chain.readable.map((v) => v.length)).toEqual([50, 50]);
    expect(chain.readableBytes).toBe(100);
    expect(new Uint8Array([...chain.readable[0]!, ...chain.readable[1]!])).toEqual(bytes(100, 5));
  });

  it('follows avail.idx across the u16 wrap', () => {
    const { mem, driver } = setup({ initialIdx: 65534 });
    const vq = driver.queue(mem);
    const heads: number[] = [];
    for (let i = 0; i < 4; i++) {
      const h = driver.addDirect([{ lengthBytes: 16 }, { lengthBytes: 1, write: true }]);
      heads.push(h);
      driver.publish(h);
    }
    expect(driver.availIdx).toBe(2);
    const got: number[] = [];
    for (let c = vq.pop(); c !== undefined; c = vq.pop()) {
      got.push(c.head);
      vq.pushUsed(c.head, 1);
    }
    expect(got).toEqual(heads);
    expect(vq.lastAvailIdx).toBe(2);
    expect(driver.usedIdx()).toBe(2);
    expect(driver.usedElem(65535 % 8)).toEqual({ id: heads[1], len: 1 });
  });

  it('re-reads avail.idx only when the entries it announced are consumed', () => {
    const { mem, driver } = setup();
    const vq = driver.queue(mem);
    const h0 = driver.addDirect([{ lengthBytes: 16 }, { lengthBytes: 1, write: true }]);
    driver.publish(h0);
    expect(vq.pop()!.head).toBe(h0);
    expect(vq.pop()).toBeUndefined();
    const h1 = driver.addDirect([{ lengthBytes: 16 }, { lengthBytes: 1, write: true }]);
    driver.publish(h1);
    expect(vq.hasAvailable()).toBe(true);
    expect(vq.pop()!.head).toBe(h1);
  });

  it('chainAt walks a chain by head without touching the avail ring (inflight resubmission)', () => {
    const { mem, driver } = setup();
    const head = driver.addIndirect([{ lengthBytes: 16, data: bytes(16, 2) }, { lengthBytes: 1, write: true }]);
    const vq = driver.queue(mem);
    const chain = vq.chainAt(head);
    expect(chain.head).toBe(head);
    expect(chain.readable[0]).toEqual(bytes(16, 2));
    expect(vq.inFlightCount).toBe(1);
    expect(vq.lastAvailIdx).toBe(0);
    expect(vq.pop()).toBeUndefined();
    expect(() => vq.chainAt(8)).toThrow(/not a descriptor index/);
    expect(vq.broken).toBeDefined();
    expect(() => vq.chainAt(head)).toThrow(VirtqueueError);
  });

  it('refuses bad construction: size not a power of two, short or misaligned rings', () => {
    const { mem, driver } = setup();
    const opts = driver.ringOptions(mem);
    expect(() => new SplitVirtqueue({ ...opts, queueSize: 6 })).toThrow(VirtqueueError);
    expect(() => new SplitVirtqueue({ ...opts, queueSize: 65536 })).toThrow(VirtqueueError);
    expect(() => new SplitVirtqueue({ ...opts, used: opts.used.subarray(0, 10) })).toThrow(/too short/);
    const misaligned = mem.at(driver.usedAddr + 2, opts.used.length);
    expect(() => new SplitVirtqueue({ ...opts, used: misaligned })).toThrow(/aligned/);
  });
});

describe('SplitVirtqueue: notifications', () => {
  it('EVENT_IDX: notifies when used_event lies in [old, new), across the u16 wrap', () => {
    const { mem, driver } = setup({ eventIdx: true, initialIdx: 65530 });
    const vq = driver.queue(mem);
    const complete = (n: number) => {
      for (let i = 0; i < n; i++) {
        const h = driver.addDirect([{ lengthBytes: 16 }, { lengthBytes: 1, write: true }]);
        driver.publish(h);
        vq.pushUsed(vq.pop()!.head, 1);
      }
    };
    // First check after set-up always notifies (old is unknown).
    complete(1); // used 65531
    expect(vq.shouldNotify()).toBe(true);
    // Guest wants an interrupt once used idx passes 65532 (i.e. when entry 65532 is used).
    driver.setUsedEvent(65532);
    complete(1); // 65532: event 65532 not yet passed (needs new - 1 >= event)
    expect(vq.shouldNotify()).toBe(false);
    complete(1); // 65533
    expect(vq.shouldNotify()).toBe(true);
    complete(1); // 65534: event is behind, already signalled
    expect(vq.shouldNotify()).toBe(false);
    // Event across the wrap: 65535 -> 0 -> 1.
    driver.setUsedEvent(0);
    complete(2); // 65534 -> 0: entries 65534 and 65535 used, event 0 not yet
    expect(vq.usedIdx).toBe(0);
    expect(vq.shouldNotify()).toBe(false);
    complete(1); // 0 -> 1: entry 0 used
    expect(vq.usedIdx).toBe(1);
    expect(vq.shouldNotify()).toBe(true);
    // Several completions batched before one check: notify if the event is anywhere in the batch.
    driver.setUsedEvent(3);
    complete(4); // 1 -> 5
    expect(vq.shouldNotify()).toBe(true);
    // No new completions since the last check: never notify.
    expect(vq.shouldNotify()).toBe(false);
    // The check compares against the previous *check*: used_event rewound into an old window is not re-signalled.
    driver.setUsedEvent(2);
    complete(1);
    expect(vq.shouldNotify()).toBe(false);
  });

  it('EVENT_IDX matches the reference formula for every small window around the wrap', () => {
    // (u16)(new - event - 1) < (u16)(new - old), checked against BigInt arithmetic mod 2^16.
    const needEvent = (event: number, newIdx: number, oldIdx: number) => {
      const mod = (x: number) => ((x % 65536) + 65536) % 65536;
      // event in [old, new) modulo 2^16
      return mod(event - oldIdx) < mod(newIdx - oldIdx);
    };
    for (const start of [65530, 0, 32767]) {
      for (let batch = 1; batch <= 4; batch++) {
        for (let delta = -3; delta <= 6; delta++) {
          const { mem, driver } = setup({ eventIdx: true, initialIdx: start });
          const vq = driver.queue(mem);
          const h = driver.addDirect([{ lengthBytes: 1, write: true }]);
          driver.publish(h);
          vq.pushUsed(vq.pop()!.head, 1);
          vq.shouldNotify(); // establishes old
          const oldIdx = vq.usedIdx;
          const event = (oldIdx + delta + 65536) & 0xffff;
          driver.setUsedEvent(event);
          for (let i = 0; i < batch; i++) {
            const hh = driver.addDirect([{ lengthBytes: 1, write: true }]);
            driver.publish(hh);
            vq.pushUsed(vq.pop()!.head, 1);
          }
          expect(vq.shouldNotify(), `start ${start} batch ${batch} delta ${delta}`).toBe(needEvent(event, vq.usedIdx, oldIdx));
        }
      }
    }
  });

  it('without EVENT_IDX honours VRING_AVAIL_F_NO_INTERRUPT', () => {
    const { mem, driver } = setup();
    const vq = driver.queue(mem);
    const h = driver.addDirect([{ lengthBytes: 1, write: true }]);
    driver.publish(h);
    vq.pushUsed(vq.pop()!.head, 1);
    expect(vq.shouldNotify()).toBe(true);
    driver.setAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
    expect(vq.shouldNotify()).toBe(false);
  });

  it('enableNotify/disableNotify: used.flags NO_NOTIFY, or avail_event with EVENT_IDX', () => {
    const plain = setup();
    const vq = plain.driver.queue(plain.mem);
    vq.disableNotify();
    expect(plain.driver.usedFlags() & VRING_USED_F_NO_NOTIFY).toBe(VRING_USED_F_NO_NOTIFY);
    vq.enableNotify();
    expect(plain.driver.usedFlags() & VRING_USED_F_NO_NOTIFY).toBe(0);

    const ev = setup({ eventIdx: true, initialIdx: 65535 });
    const q = ev.driver.queue(ev.mem);
    const h = ev.driver.addDirect([{ lengthBytes: 1, write: true }]);
    ev.driver.publish(h);
    q.disableNotify();
    expect(q.pop()!.head).toBe(h);
    q.enableNotify();
    // The guest kicks when it publishes entry 0 (the next one we will consume).
    expect(ev.driver.availEvent()).toBe(0);
    expect(ev.driver.usedFlags()).toBe(0);
    // The caller re-checks after enabling: an entry published meanwhile is seen.
    const h2 = ev.driver.addDirect([{ lengthBytes: 1, write: true }]);
    ev.driver.publish(h2);
    expect(q.hasAvailable()).toBe(true);
  });
});

describe('SplitVirtqueue: hostile guests', () => {
  function hostile(build: (d: FakeDriver) => number, options: { queueSize?: number; indirectDesc?: boolean; maxChainBytes?: number } = {}) {
    const { mem, driver } = setup({ queueSize: options.queueSize ?? 8 });
    const head = build(driver);
    driver.publish(head);
    return driver.queue(mem, {
      ...(options.indirectDesc !== undefined ? { indirectDesc: options.indirectDesc } : {}),
      ...(options.maxChainBytes !== undefined ? { maxChainBytes: options.maxChainBytes } : {}),
    });
  }
  const W = VIRTQ_DESC_F_WRITE;
  const N = VIRTQ_DESC_F_NEXT;
  const I = VIRTQ_DESC_F_INDIRECT;

  it('a next-loop (0 -> 1 -> 0) is caught by the chain length cap', () => {
    const vq = hostile((d) => {
      const [a] = d.buffers([{ lengthBytes: 16 }]);
      d.writeDesc(d.descAddr, 0, a!, 16, N, 1);
      d.writeDesc(d.descAddr, 1, a!, 16, N, 0);
      return 0;
    });
    expectBroken(vq, /longer than 8/);
  });

  it('a self-loop of writable descriptors', () => {
    const vq = hostile((d) => {
      const [a] = d.buffers([{ lengthBytes: 1 }]);
      d.writeDesc(d.descAddr, 5, a!, 1, W | N, 5);
      return 5;
    });
    expectBroken(vq, /loop/);
  });

  it('next and head indices beyond the queue size', () => {
    expectBroken(
      hostile((d) => {
        const [a] = d.buffers([{ lengthBytes: 16 }]);
        d.writeDesc(d.descAddr, 0, a!, 16, N, 8);
        return 0;
      }),
      /next 8 out of range/,
    );
    expectBroken(
      hostile(() => 9),
      /not a descriptor index/,
    );
  });

  it('addresses outside guest memory: below, above, straddling the end, and beyond 2^53 / 2^64', () => {
    for (const [addr, len] of [
      [0x1000, 16],
      [RAM_BASE + RAM_BYTES, 1],
      [RAM_BASE + RAM_BYTES - 8, 16],
      [2 ** 53, 16],
      [0xffff_ffff_ffff_fff0n, 32],
    ] as const) {
      const vq = hostile((d) => {
        d.writeDesc(d.descAddr, 0, addr, len, 0, 0);
        return 0;
      });
      expectBroken(vq, /outside guest memory/);
    }
  });

  it('huge lengths: a 4 GiB descriptor, and a chain summing past the byte cap', () => {
    expectBroken(
      hostile((d) => {
        d.writeDesc(d.descAddr, 0, RAM_BASE, 0xffff_ffff, 0, 0);
        return 0;
      }),
      /exceeds/,
    );
    expectBroken(
      hostile(
        (d) => {
          for (let i = 0; i < 4; i++) d.writeDesc(d.descAddr, i, RAM_BASE, 1024 * 1024, i < 3 ? N : 0, i + 1);
          return 0;
        },
        { maxChainBytes: 3 * 1024 * 1024 },
      ),
      /exceeds 3145728 bytes/,
    );
  });

  it('nested indirect, indirect with NEXT, and indirect when not negotiated', () => {
    expectBroken(
      hostile((d) => {
        const inner = d.alloc(16);
        d.writeDesc(inner, 0, RAM_BASE, 16, 0, 0);
        const outer = d.alloc(16);
        d.writeDesc(outer, 0, inner, 16, I, 0);
        d.writeDesc(d.descAddr, 0, outer, 16, I, 0);
        return 0;
      }),
      /nested indirect/,
    );
    expectBroken(
      hostile((d) => {
        const t = d.alloc(16);
        d.writeDesc(t, 0, RAM_BASE, 16, 0, 0);
        d.writeDesc(d.descAddr, 0, t, 16, I | N, 1);
        d.writeDesc(d.descAddr, 1, RAM_BASE, 1, W, 0);
        return 0;
      }),
      /indirect descriptor with NEXT/,
    );
    expectBroken(
      hostile(
        (d) => {
          const t = d.alloc(16);
          d.writeDesc(t, 0, RAM_BASE, 16, 0, 0);
          d.writeDesc(d.descAddr, 0, t, 16, I, 0);
          return 0;
        },
        { indirectDesc: false },
      ),
      /without VIRTIO_RING_F_INDIRECT_DESC/,
    );
  });

  it('bad indirect table lengths and places', () => {
    for (const len of [0, 8, 24, 16 * 1025]) {
      const vq = hostile((d) => {
        const t = d.alloc(16 * 1025);
        d.writeDesc(d.descAddr, 0, t, len, I, 0);
        return 0;
      });
      expectBroken(vq, /indirect table of/);
    }
    expectBroken(
      hostile((d) => {
        d.writeDesc(d.descAddr, 0, RAM_BASE + RAM_BYTES - 16, 32, I, 0);
        return 0;
      }),
      /indirect table .* outside guest memory/,
    );
  });

  it('loops and out-of-range next inside an indirect table', () => {
    expectBroken(
      hostile((d) => {
        const t = d.alloc(32);
        d.writeDesc(t, 0, RAM_BASE, 16, N, 1);
        d.writeDesc(t, 1, RAM_BASE, 16, N, 0);
        d.writeDesc(d.descAddr, 0, t, 32, I, 0);
        return 0;
      }),
      /longer than 2 entries/,
    );
    expectBroken(
      hostile((d) => {
        const t = d.alloc(32);
        d.writeDesc(t, 0, RAM_BASE, 16, N, 2);
        d.writeDesc(d.descAddr, 0, t, 32, I, 0);
        return 0;
      }),
      /next 2 out of range \(2 entries\)/,
    );
  });

  it('a readable descriptor after a writable one (direct, indirect, zero-length)', () => {
    expectBroken(
      hostile((d) => d.addDirect([{ lengthBytes: 16 }, { lengthBytes: 512, write: true }, { lengthBytes: 512 }, { lengthBytes: 1, write: true }])),
      /readable descriptor after a writable one/,
    );
    expectBroken(
      hostile((d) => d.addIndirect([{ lengthBytes: 1, write: true }, { lengthBytes: 16 }])),
      /readable descriptor after a writable one/,
    );
    expectBroken(
      hostile((d) => d.addDirect([{ lengthBytes: 0, write: true }, { lengthBytes: 0 }])),
      /readable descriptor after a writable one/,
    );
  });

  it('avail.idx jumping by more than the queue size', () => {
    const { mem, driver } = setup();
    const vq = driver.queue(mem);
    driver.setAvailIdx(9);
    expectBroken(vq, /9 entries ahead/);
    // Exactly the queue size is fine (a full ring).
    const ok = setup();
    const q = ok.driver.queue(ok.mem);
    for (let i = 0; i < 8; i++) ok.driver.publish(ok.driver.addDirect([{ lengthBytes: 1, write: true }]));
    let n = 0;
    while (q.pop() !== undefined) n++;
    expect(n).toBe(8);
  });

  it('descriptors rewritten between pops are read once each (no double fetch of a checked value)', () => {
    // Not a race we can schedule from one thread, but the contract we can check: the views a chain
    // returns are fixed at pop time, whatever the guest writes into the table afterwards.
    const { mem, driver } = setup();
    const head = driver.addDirect([{ lengthBytes: 16 }, { lengthBytes: 1, write: true }]);
    driver.publish(head);
    const vq = driver.queue(mem);
    const chain = vq.pop()!;
    driver.writeDesc(driver.descAddr, head, 0, 0xffff_ffff, 0, 0);
    expect(chain.readable[0]!.length).toBe(16);
    expect(chain.writable[0]!.length).toBe(1);
  });
});

describe('GuestMemory over memfd', () => {
  const MiB = 1024 * 1024;

  function withMemfd<T>(sizeBytes: number, fn: (fd: number) => T): T {
    const fd = memfdCreate('strata-test-guest', sizeBytes);
    try {
      return fn(fd);
    } finally {
      closeFd(fd);
    }
  }

  it('translates guest and front-end addresses into one mapping per region; a ring works over it', () => {
    withMemfd(8 * MiB, (fd) => {
      const memory = new GuestMemory();
      const low = { guestAddr: 0n, sizeBytes: 2 * MiB, frontendAddr: 0x7f12_0000_0000n, mmapOffsetBytes: 0, fd };
      const high = { guestAddr: 0x1_0000_0000n, sizeBytes: 4 * MiB, frontendAddr: 0x7f12_0020_0000n, mmapOffsetBytes: 2 * MiB, fd };
      memory.addRegion(low);
      memory.addRegion(high);
      expect(memory.regionCount).toBe(2);
      // A second mapping of the same memfd plays the front-end writing guest RAM.
      const frontend = mapShared(fd, 8 * MiB, 0);
      try {
        frontend.bytes.set([1, 2, 3], 2 * MiB + 100);
        expect(Array.from(memory.guestRange(0x1_0000_0064n, 3)!)).toEqual([1, 2, 3]);
        expect(Array.from(memory.frontendRange(0x7f12_0020_0064n, 3)!)).toEqual([1, 2, 3]);
        // Writes through our view are seen by the front-end.
        memory.guestRange(0x10n, 1)![0] = 0x5a;
        expect(frontend.bytes[0x10]).toBe(0x5a);
        // Edges: last byte in, one past out, crossing out, BigInt beyond 2^53 out.
        expect(memory.guestRange(0x1_0000_0000n + BigInt(4 * MiB - 1), 1)).toBeDefined();
        expect(memory.guestRange(0x1_0000_0000n + BigInt(4 * MiB), 1)).toBeUndefined();
        expect(memory.guestRange(BigInt(2 * MiB - 1), 2)).toBeUndefined();
        expect(memory.guestRange(2n ** 60n, 1)).toBeUndefined();
        expect(memory.guestRange(-1n, 1)).toBeUndefined();
        expect(memory.frontendRange(0x7f12_0000_0000n - 1n, 1)).toBeUndefined();
        expect(memory.frontendRange(0x7f12_0000_0000n + BigInt(2 * MiB - 4), 8)).toBeUndefined();
        // guestPrefix stops at the region end.
        expect(memory.guestPrefix(2 * MiB - 10, 100)!.length).toBe(10);
        expect(memory.guestPrefix(3 * MiB, 1)).toBeUndefined();

        // A ring in the high region, vring addresses translated as front-end addresses.
        const driverMem = { at: (guestAddr: number, len: number) => memory.guestRange(BigInt(guestAddr), len)! };
        const driver = new FakeDriver(driverMem, 16, 0x1_0000_0000, true);
        const head = driver.addIndirect([
          { lengthBytes: 16, data: bytes(16, 1) },
          { lengthBytes: 4096, write: true },
          { lengthBytes: 1, write: true },
        ]);
        driver.publish(head);
        const toFrontend = (guestAddr: number) => 0x7f12_0020_0000n + BigInt(guestAddr - 0x1_0000_0000);
        const sizes = splitRingSizes(16, true);
        const vq = new SplitVirtqueue({
          memory,
          queueSize: 16,
          desc: memory.frontendRange(toFrontend(driver.descAddr), sizes.descBytes)!,
          avail: memory.frontendRange(toFrontend(driver.availAddr), sizes.availBytes)!,
          used: memory.frontendRange(toFrontend(driver.usedAddr), sizes.usedBytes)!,
          eventIdx: true,
        });
        const chain = vq.pop()!;
        expect(chain.readable[0]).toEqual(bytes(16, 1));
        chain.writable[0]!.fill(0xee);
        vq.pushUsed(chain.head, 4097);
        expect(driver.usedElem(0)).toEqual({ id: head, len: 4097 });
        expect(vq.shouldNotify()).toBe(true);
      } finally {
        frontend.unmap();
        memory.clear();
      }
      expect(memory.regionCount).toBe(0);
      expect(memory.guestRange(0n, 1)).toBeUndefined();
    });
  });

  it('refuses overlaps, regions beyond the file or beyond 2^53, and more than 509 regions', () => {
    withMemfd(4 * MiB, (fd) => {
      const memory = new GuestMemory();
      try {
        memory.addRegion({ guestAddr: 0x10_0000n, sizeBytes: MiB, frontendAddr: 0x1000_0000n, mmapOffsetBytes: 0, fd });
        expect(() => memory.addRegion({ guestAddr: 0x18_0000n, sizeBytes: MiB, frontendAddr: 0x2000_0000n, mmapOffsetBytes: 0, fd })).toThrow(/overlaps/);
        expect(() => memory.addRegion({ guestAddr: 0x0n, sizeBytes: 0x10_0001, frontendAddr: 0x2000_0000n, mmapOffsetBytes: 0, fd })).toThrow(/overlaps/);
        expect(() => memory.addRegion({ guestAddr: 0x100_0000n, sizeBytes: 4 * MiB, frontendAddr: 0x2000_0000n, mmapOffsetBytes: 4096, fd })).toThrow(/beyond the end of its file/);
        expect(() => memory.addRegion({ guestAddr: 2n ** 53n - 4096n, sizeBytes: 8192, frontendAddr: 0x2000_0000n, mmapOffsetBytes: 0, fd })).toThrow(/beyond 2\^53/);
        expect(() => memory.addRegion({ guestAddr: 0x100_0000n, sizeBytes: 0, frontendAddr: 0x2000_0000n, mmapOffsetBytes: 0, fd })).toThrow(/0 bytes/);
        // Adjacent is fine; removal needs the exact triple.
        memory.addRegion({ guestAddr: 0x20_0000n, sizeBytes: MiB, frontendAddr: 0x3000_0000n, mmapOffsetBytes: MiB, fd });
        expect(memory.guestPrefix(0x1f_fff0, 32)!.length).toBe(16);
        expect(memory.removeRegion(0x20_0000n, MiB, 0x3000_0001n)).toBe(false);
        expect(memory.removeRegion(0x20_0000n, MiB, 0x3000_0000n)).toBe(true);
        expect(memory.guestRange(0x20_0000n, 1)).toBeUndefined();
        expect(memory.guestRange(0x10_0000n, 1)).toBeDefined();
        memory.clear();
        for (let i = 0; i < MAX_MEMORY_REGIONS; i++) {
          memory.addRegion({ guestAddr: BigInt(i * 8192), sizeBytes: 4096, frontendAddr: BigInt(0x4000_0000 + i * 8192), mmapOffsetBytes: 4096 * (i % 512), fd });
        }
        expect(memory.regionCount).toBe(MAX_MEMORY_REGIONS);
        expect(() => memory.addRegion({ guestAddr: 0x1000_0000n, sizeBytes: 4096, frontendAddr: 0x9000_0000n, mmapOffsetBytes: 0, fd })).toThrow(/more than 509/);
        // Lookups through the binary search hit the right one among hundreds.
        memory.guestRange(BigInt(300 * 8192), 4)!.set([9, 8, 7, 6]);
        expect(Array.from(memory.frontendRange(BigInt(0x4000_0000 + 300 * 8192), 4)!)).toEqual([9, 8, 7, 6]);
        expect(memory.guestRange(BigInt(300 * 8192 + 4096), 1)).toBeUndefined();
      } finally {
        memory.clear();
      }
    });
  });

  it('maps a region larger than 4 GiB in overlapping pieces; buffers across a piece boundary split', () => {
    const sizeBytes = 5 * 1024 * MiB; // sparse memfd: only touched pages use memory
    withMemfd(sizeBytes, (fd) => {
      const memory = new GuestMemory();
      try {
        memory.addRegion({ guestAddr: 0x1_0000_0000n, sizeBytes, frontendAddr: 0x7f00_0000_0000n, mmapOffsetBytes: 0, fd });
        const boundary = 0x1_0000_0000 + PIECE_STRIDE_BYTES;
        // A ring straddling the boundary is within the overlap: one view.
        const ring = memory.frontendRange(0x7f00_0000_0000n + BigInt(PIECE_STRIDE_BYTES - 4096), 8192);
        expect(ring?.length).toBe(8192);
        ring!.fill(0x42);
        // The same bytes through the next piece's mapping.
        expect(memory.guestRange(BigInt(boundary), 4096)!.every((b) => b === 0x42)).toBe(true);
        // A long buffer across the boundary comes back in two parts (first one runs into the overlap).
        const start = boundary - 4096;
        const first = memory.guestPrefix(start, 4 * MiB)!;
        expect(first.length).toBe(4096 + PIECE_OVERLAP_BYTES);
        const second = memory.guestPrefix(start + first.length, 4 * MiB - first.length)!;
        expect(second.length).toBe(4 * MiB - first.length);
        expect(memory.guestPrefix(0x1_0000_0000 + sizeBytes - 1, 10)!.length).toBe(1);
        expect(memory.guestPrefix(0x1_0000_0000 + sizeBytes, 1)).toBeUndefined();
      } finally {
        memory.clear();
      }
    });
  });
});

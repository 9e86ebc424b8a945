/**
 * Malformed vhost-user messages against Strata's back-end (VhostUserBlkExport in this process).
 * Every message goes out with NEED_REPLY after REPLY_ACK was negotiated, so the back-end has to
 * answer: the rule is an error reply (REPLY_ACK with a non-zero u64) or a closed connection; a
 * silent back-end, a zero (success) ack or a well-formed answer to a malformed GET fails the case.
 * After every case: a fresh connection serves I/O, and the process holds no more descriptors
 * than before the case (received fds of refused messages are closed, mappings released).
 * The outcome of each case is printed (console.info).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventFd } from '../../src/sys/eventfd.js';
import { requireTool } from '../support/tools.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  FLAG_VERSION,
  VhostUserFrontend,
  VhostUserRequest as Req,
  configPayload,
  memTablePayload,
  singleRegionPayload,
  u64Payload,
  vringAddrPayload,
  vringStatePayload,
  type ReceivedMessage,
} from './frontend.js';
import { disconnected, openFdCount, serveStrata, type StrataTarget } from './strata-target.js';

const MiB = 1024 * 1024;
const SIZE_BYTES = 8 * MiB;
const FILL = 0x42;
const QUEUES = 2;
const record: string[] = [];

type Verdict = 'error reply' | 'closed' | `bad: ${string}`;

function verdict(out: { reply: ReceivedMessage } | 'closed' | 'silent', request: number): Verdict {
  if (out === 'closed') return 'closed';
  if (out === 'silent') return 'bad: no reply, connection open';
  const m = out.reply;
  if ((m.flags & FLAG_REPLY) === 0) return `bad: message without REPLY flag`;
  if (m.request !== request) return `bad: reply to request ${m.request}`;
  // GET_CONFIG's failure reply is an empty payload (what libvhost-user sends and QEMU checks for)
  if (request === Req.GET_CONFIG && m.payload.length === 0) return 'error reply';
  if (m.payload.length === 8 && new DataView(m.payload.buffer, m.payload.byteOffset).getBigUint64(0, true) !== 0n) return 'error reply';
  return `bad: reply ${Buffer.from(m.payload).toString('hex').slice(0, 48)} (accepted)`;
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('malformed vhost-user messages against Strata', () => {
  let tmp: { path: string; cleanup: () => void };
  let target: StrataTarget;
  let fdBaseline = 0;

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    target = await serveStrata(tmp.path, 'm', { sizeBytes: SIZE_BYTES, fill: FILL, queueCount: QUEUES });
    // one full connection first, so that lazily created descriptors (libuv, koffi) exist already
    await disconnected(target);
    const fe = await VhostUserFrontend.connect(target.socketPath, { queueCount: QUEUES, queueDepth: 2, maxRequestBytes: 4096 });
    await fe.read(0, 512);
    fe.close();
    await settleFds(Number.MAX_SAFE_INTEGER);
    fdBaseline = openFdCount();
  });

  afterAll(async () => {
    await target?.close();
    if (record.length > 0) console.info(`malformed outcomes:\n${record.join('\n')}`);
    tmp?.cleanup();
  });

  /** Waits (bounded) for the back-end to release a closed connection's descriptors. */
  async function settleFds(limit: number): Promise<number> {
    let n = openFdCount();
    for (let i = 0; i < 100 && n > limit; i++) {
      await sleep(20);
      n = openFdCount();
    }
    return n;
  }

  async function expectFreshConnectionWorks(): Promise<void> {
    await disconnected(target);
    const fe = await VhostUserFrontend.connect(target.socketPath, { queueCount: QUEUES, queueDepth: 2, maxRequestBytes: 4096 });
    try {
      const got = await fe.read(8, 4096, 1);
      expect(got.every((x) => x === FILL)).toBe(true);
    } finally {
      fe.close();
    }
  }

  /** Connects, runs QEMU's init (REPLY_ACK negotiated), then `setup`, then sends the malformed message. */
  async function malformed(
    name: string,
    send: (fe: VhostUserFrontend) => Promise<{ request: number }> | { request: number },
    opts: { setup?: (fe: VhostUserFrontend) => Promise<void>; allowAccept?: boolean } = {},
  ): Promise<void> {
    await disconnected(target);
    const fe = VhostUserFrontend.connectRaw(target.socketPath, { queueCount: QUEUES, queueDepth: 2, maxRequestBytes: 4096, start: false });
    let v: Verdict;
    try {
      await fe.init();
      await opts.setup?.(fe);
      const { request } = await send(fe);
      v = verdict(await fe.outcome(), request);
    } finally {
      fe.close();
    }
    record.push(`- ${name}: ${v}`);
    if (!(opts.allowAccept && v.startsWith('bad: reply'))) expect(v, name).not.toMatch(/^bad/);
    await expectFreshConnectionWorks();
    const fds = await settleFds(fdBaseline);
    expect(fds, `${name}: descriptors left open`).toBeLessThanOrEqual(fdBaseline);
  }

  function send(fe: VhostUserFrontend, request: number, payload: Uint8Array, fds: number[] = [], flags = FLAG_VERSION | FLAG_NEED_REPLY): { request: number } {
    fe.sendRaw({ request, flags }, payload, fds);
    return { request };
  }

  /** A correct payload and fds for each request (fds are owned by the returned closer). */
  function correct(fe: VhostUserFrontend, request: number): { payload: Uint8Array; fds: number[]; done: () => void } {
    const ev = EventFd.create();
    const done = (): void => ev.close();
    switch (request) {
      case Req.SET_FEATURES:
      case Req.SET_PROTOCOL_FEATURES:
        return { payload: u64Payload(0n), fds: [], done };
      case Req.SET_MEM_TABLE:
        return { payload: memTablePayload(fe.memoryRegions.slice(0, 1)), fds: [fe.memfd], done };
      case Req.ADD_MEM_REG:
      case Req.REM_MEM_REG:
        return { payload: singleRegionPayload(fe.memoryRegions[0]!), fds: request === Req.ADD_MEM_REG ? [fe.memfd] : [], done };
      case Req.SET_VRING_NUM:
        return { payload: vringStatePayload(0, 16), fds: [], done };
      case Req.SET_VRING_BASE:
      case Req.GET_VRING_BASE:
      case Req.SET_VRING_ENABLE:
        return { payload: vringStatePayload(0, 0), fds: [], done };
      case Req.SET_VRING_ADDR: {
        const q = fe.queue(0);
        return { payload: vringAddrPayload({ index: 0, descFrontendAddr: q.desc.frontendAddr, usedFrontendAddr: q.used.frontendAddr, availFrontendAddr: q.avail.frontendAddr }), fds: [], done };
      }
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR:
        return { payload: u64Payload(0n), fds: [ev.fd], done };
      case Req.GET_CONFIG:
        return { payload: configPayload(0, 60), fds: [], done };
      default:
        return { payload: new Uint8Array(0), fds: [], done };
    }
  }

  const SIZED = [
    Req.GET_FEATURES,
    Req.SET_FEATURES,
    Req.SET_OWNER,
    Req.SET_MEM_TABLE,
    Req.SET_VRING_NUM,
    Req.SET_VRING_ADDR,
    Req.SET_VRING_BASE,
    Req.GET_VRING_BASE,
    Req.SET_VRING_KICK,
    Req.SET_VRING_CALL,
    Req.SET_VRING_ERR,
    Req.GET_PROTOCOL_FEATURES,
    Req.SET_PROTOCOL_FEATURES,
    Req.GET_QUEUE_NUM,
    Req.SET_VRING_ENABLE,
    Req.GET_CONFIG,
    Req.GET_MAX_MEM_SLOTS,
    Req.ADD_MEM_REG,
    Req.REM_MEM_REG,
  ];

  it('wrong payload size for each request type (short and long)', async () => {
    for (const request of SIZED) {
      for (const how of ['short', 'long'] as const) {
        if (how === 'short' && (request === Req.GET_FEATURES || request === Req.SET_OWNER || request === Req.GET_PROTOCOL_FEATURES || request === Req.GET_QUEUE_NUM || request === Req.GET_MAX_MEM_SLOTS)) continue; // nothing shorter than empty
        await malformed(`request ${request} ${how}`, (fe) => {
          const c = correct(fe, request);
          try {
            const payload = how === 'short' ? c.payload.subarray(0, c.payload.length - 4) : Buffer.concat([c.payload, Buffer.alloc(8, 0)]);
            return send(fe, request, payload, c.fds);
          } finally {
            c.done();
          }
        });
      }
    }
  });

  it('unknown request ids', async () => {
    for (const request of [0, 19, 20, 22, 23, 41, 99, 1000, 0xffffffff]) {
      await malformed(`unknown request ${request}`, (fe) => send(fe, request, u64Payload(0n)));
    }
  });

  it('missing descriptors', async () => {
    for (const request of [Req.SET_VRING_KICK, Req.SET_VRING_CALL, Req.SET_VRING_ERR, Req.SET_MEM_TABLE, Req.ADD_MEM_REG]) {
      await malformed(`request ${request} without its fd`, (fe) => {
        const c = correct(fe, request);
        c.done();
        return send(fe, request, c.payload, []);
      });
    }
  });

  it('extra descriptors', async () => {
    for (const request of [Req.GET_FEATURES, Req.SET_FEATURES, Req.SET_VRING_NUM, Req.SET_VRING_KICK, Req.SET_MEM_TABLE, Req.ADD_MEM_REG]) {
      await malformed(`request ${request} with an extra fd`, (fe) => {
        const c = correct(fe, request);
        const ev = EventFd.create();
        try {
          return send(fe, request, c.payload, [...c.fds, ev.fd]);
        } finally {
          ev.close();
          c.done();
        }
      });
    }
  });

  it('too many memory regions', async () => {
    await malformed('SET_MEM_TABLE with nregions 9 (8 fds)', (fe) => {
      const r = fe.memoryRegions[0]!;
      const regions = Array.from({ length: 9 }, (_, i) => ({ ...r, guestAddr: BigInt(i) << 32n, sizeBytes: 4096n, mmapOffsetBytes: BigInt(i * 4096) }));
      return send(fe, Req.SET_MEM_TABLE, memTablePayload(regions), Array.from({ length: 8 }, () => fe.memfd));
    });
    await malformed('SET_MEM_TABLE claiming 200 regions, carrying 1', (fe) => send(fe, Req.SET_MEM_TABLE, memTablePayload(fe.memoryRegions.slice(0, 1), 200), [fe.memfd]));
    await malformed('SET_MEM_TABLE with 0 regions', (fe) => send(fe, Req.SET_MEM_TABLE, memTablePayload([]), []));
    await malformed('SET_MEM_TABLE with two overlapping regions', (fe) => {
      const r = fe.memoryRegions[0]!;
      return send(fe, Req.SET_MEM_TABLE, memTablePayload([r, { ...r, guestAddr: r.guestAddr + 4096n, mmapOffsetBytes: 0n }]), [fe.memfd, fe.memfd]);
    });
    await malformed('ADD_MEM_REG one more than GET_MAX_MEM_SLOTS', async (fe) => {
      const r = fe.memoryRegions[0]!;
      expect(fe.maxMemSlots).toBeGreaterThan(0);
      for (let i = 0; i < fe.maxMemSlots; i++) {
        await fe.request(Req.ADD_MEM_REG, singleRegionPayload({ ...r, guestAddr: (1n << 40n) + BigInt(i) * 4096n, sizeBytes: 4096n, frontendAddr: r.frontendAddr + BigInt(i % 256) * 4096n, mmapOffsetBytes: BigInt((i % 256) * 4096) }), [fe.memfd], true);
      }
      return send(fe, Req.ADD_MEM_REG, singleRegionPayload({ ...r, guestAddr: 1n << 41n, sizeBytes: 4096n }), [fe.memfd]);
    });
  });

  it('vring index out of range', async () => {
    for (const index of [QUEUES, 255, 0xffffffff]) {
      for (const request of [Req.SET_VRING_NUM, Req.SET_VRING_BASE, Req.GET_VRING_BASE, Req.SET_VRING_ENABLE]) {
        await malformed(`request ${request} for vring ${index}`, (fe) => send(fe, request, vringStatePayload(index, request === Req.SET_VRING_NUM ? 16 : 0)));
      }
      await malformed(`SET_VRING_ADDR for vring ${index}`, (fe) => {
        const q = fe.queue(0);
        return send(fe, Req.SET_VRING_ADDR, vringAddrPayload({ index, descFrontendAddr: q.desc.frontendAddr, usedFrontendAddr: q.used.frontendAddr, availFrontendAddr: q.avail.frontendAddr }));
      });
      for (const request of [Req.SET_VRING_KICK, Req.SET_VRING_CALL]) {
        await malformed(`request ${request} for vring ${index & 0xff}`, (fe) => {
          const ev = EventFd.create();
          try {
            return send(fe, request, u64Payload(BigInt(index & 0xff)), [ev.fd]);
          } finally {
            ev.close();
          }
        });
      }
    }
  });

  it('ring size not a power of two, zero, or too large', async () => {
    for (const num of [0, 3, 100, 32769, 65536]) {
      await malformed(`SET_VRING_NUM ${num}`, (fe) => send(fe, Req.SET_VRING_NUM, vringStatePayload(0, num)));
    }
  });

  it('vring addresses not in the memory table, crossing a region end, or misaligned', async () => {
    const setup = async (fe: VhostUserFrontend): Promise<void> => {
      await fe.request(Req.SET_FEATURES, u64Payload(fe.featuresFor({ eventIdx: true, indirect: false })));
      await fe.sendMemTable();
      await fe.request(Req.SET_VRING_NUM, vringStatePayload(0, 256));
      await fe.request(Req.SET_VRING_BASE, vringStatePayload(0, 0));
    };
    const cases: [string, (fe: VhostUserFrontend) => { d: bigint; u: bigint; a: bigint }][] = [
      ['desc not in the table', (fe) => ({ d: 0x10n, u: fe.queue(0).used.frontendAddr, a: fe.queue(0).avail.frontendAddr })],
      ['used not in the table', (fe) => ({ d: fe.queue(0).desc.frontendAddr, u: 0xdead0000n, a: fe.queue(0).avail.frontendAddr })],
      ['avail not in the table', (fe) => ({ d: fe.queue(0).desc.frontendAddr, u: fe.queue(0).used.frontendAddr, a: fe.memoryRegions[0]!.frontendAddr + fe.memoryRegions[0]!.sizeBytes + 0x100000n })],
      [
        'desc table crossing the region end',
        (fe) => {
          const r = fe.memoryRegions[0]!;
          return { d: r.frontendAddr + r.sizeBytes - 2048n, u: fe.queue(0).used.frontendAddr, a: fe.queue(0).avail.frontendAddr };
        },
      ],
    ];
    for (const [name, addrs] of cases) {
      await malformed(
        `SET_VRING_ADDR: ${name}`,
        (fe) => {
          const x = addrs(fe);
          return send(fe, Req.SET_VRING_ADDR, vringAddrPayload({ index: 0, descFrontendAddr: x.d, usedFrontendAddr: x.u, availFrontendAddr: x.a }));
        },
        { setup },
      );
    }
  });

  it('misaligned rings: refused at SET_VRING_ADDR or when the ring starts; never served, nothing crashes', async () => {
    for (const [name, du, da] of [
      ['used ring 2 bytes off', 2n, 0n],
      ['avail ring 1 byte off', 0n, 1n],
    ] as const) {
      await disconnected(target);
      const fe = VhostUserFrontend.connectRaw(target.socketPath, { queueCount: QUEUES, queueDepth: 2, maxRequestBytes: 4096, start: false });
      const kick = EventFd.create();
      const call = EventFd.create();
      let refusedAt = 'nowhere';
      try {
        await fe.init();
        await fe.request(Req.SET_FEATURES, u64Payload(fe.featuresFor({ eventIdx: false, indirect: false })));
        await fe.sendMemTable();
        const q = fe.queue(0);
        const steps: [string, number, Uint8Array, number[]][] = [
          ['SET_VRING_NUM', Req.SET_VRING_NUM, vringStatePayload(0, 16), []],
          ['SET_VRING_BASE', Req.SET_VRING_BASE, vringStatePayload(0, 0), []],
          ['SET_VRING_ADDR', Req.SET_VRING_ADDR, vringAddrPayload({ index: 0, descFrontendAddr: q.desc.frontendAddr, usedFrontendAddr: q.used.frontendAddr + du, availFrontendAddr: q.avail.frontendAddr + da }), []],
          ['SET_VRING_KICK', Req.SET_VRING_KICK, u64Payload(0n), [kick.fd]],
          ['SET_VRING_CALL', Req.SET_VRING_CALL, u64Payload(0n), [call.fd]],
          ['SET_VRING_ENABLE', Req.SET_VRING_ENABLE, vringStatePayload(0, 1), []],
        ];
        for (const [stepName, request, payload, fds] of steps) {
          const v = verdict(await send(fe, request, payload, fds) && (await fe.outcome()), request);
          if (v !== 'bad: reply 0000000000000000 (accepted)') {
            expect(v, `${name} at ${stepName}`).not.toMatch(/^bad/);
            refusedAt = `${stepName} (${v})`;
            break;
          }
        }
        if (refusedAt === 'nowhere') {
          // Everything acked: publish a request on the (misaligned) ring and kick; the back-end must
          // neither serve it nor fall over.
          kick.signal();
          await sleep(200);
          refusedAt = `not refused by a reply; connection ${fe.connected ? 'open' : 'closed'} after a kick, used.idx ${new DataView(q.used.bytes.buffer, q.used.bytes.byteOffset + Number(du)).getUint16(2, true)}`;
        }
      } finally {
        fe.close();
        kick.close();
        call.close();
      }
      record.push(`- misaligned ${name}: refused at ${refusedAt}`);
      await expectFreshConnectionWorks();
      expect(await settleFds(fdBaseline), name).toBeLessThanOrEqual(fdBaseline);
    }
  });

  it('bad header flags and GET_CONFIG sizes', async () => {
    await malformed('version 0 in the flags', (fe) => send(fe, Req.GET_FEATURES, new Uint8Array(0), [], FLAG_NEED_REPLY));
    await malformed('version 2 in the flags', (fe) => send(fe, Req.SET_FEATURES, u64Payload(0n), [], 2 | FLAG_NEED_REPLY));
    await malformed('GET_CONFIG of 257 bytes', (fe) => send(fe, Req.GET_CONFIG, configPayload(0, 257)));
    await malformed('GET_CONFIG whose size field disagrees with the payload', (fe) => {
      const p = configPayload(0, 60);
      new DataView(p.buffer).setUint32(4, 100, true);
      return send(fe, Req.GET_CONFIG, p);
    });
  });

  it('truncated messages, then disconnect; a header announcing a huge payload', async () => {
    for (const [name, bytes] of [
      ['6 bytes of a header', new Uint8Array([1, 0, 0, 0, 1, 0])],
      ['a header announcing 40 bytes, 10 sent', Buffer.concat([Buffer.from([9, 0, 0, 0, 9, 0, 0, 0, 40, 0, 0, 0]), Buffer.alloc(10)])],
    ] as const) {
      await disconnected(target);
      const fe = VhostUserFrontend.connectRaw(target.socketPath, { start: false });
      await fe.init();
      fe.sendBytes(bytes);
      await sleep(50);
      fe.close();
      record.push(`- ${name}, then disconnect`);
      await expectFreshConnectionWorks();
      expect(await settleFds(fdBaseline), name).toBeLessThanOrEqual(fdBaseline);
    }
    await malformed('a header announcing 0x7fffffff bytes', (fe) => {
      fe.sendBytes(Buffer.from([1, 0, 0, 0, 9, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f]));
      return { request: 1 };
    });
  });

  it('a second front-end while one is connected is refused, the first keeps working', async () => {
    await disconnected(target);
    const first = await VhostUserFrontend.connect(target.socketPath, { queueCount: QUEUES, queueDepth: 2, maxRequestBytes: 4096 });
    try {
      const second = VhostUserFrontend.connectRaw(target.socketPath, { start: false });
      try {
        const out = await second.init().then(
          () => 'served',
          () => 'refused',
        );
        record.push(`- second concurrent front-end: ${out}`);
        expect(out).toBe('refused');
      } finally {
        second.close();
      }
      expect((await first.read(0, 512))[0]).toBe(FILL);
    } finally {
      first.close();
    }
    await expectFreshConnectionWorks();
  });
});

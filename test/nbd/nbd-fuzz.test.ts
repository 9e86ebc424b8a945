/**
 * Hostile clients against the NBD server: malformed handshakes, bad magic, unknown options and
 * commands, out-of-range requests, a 4 GiB write length, truncated frames, abrupt disconnects and
 * random garbage. Each gets the protocol's error or a closed connection, and a well-behaved
 * connection opened at the start keeps working throughout (checked after every case).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as P from '../../src/export/nbd/protocol.js';
import { makeTempDir } from '../support/tmp.js';
import { requireTool, runAsync } from '../support/tools.js';
import { createImage, serveImage, type Served } from './helpers.js';
import { RawClient } from './raw-client.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('NBD server under hostile clients', () => {
  let tmp: { path: string; cleanup: () => void };
  let s: Served;
  let good: RawClient;
  let goodCookie = 1000;
  const roSize = 8 * MiB;

  beforeAll(async () => {
    tmp = makeTempDir();
    const imagePath = createImage(tmp.path, SIZE);
    const roPath = createImage(tmp.path, roSize, 'ro.qcow2');
    const { LocalHostFile } = await import('../../src/store/local-file.js');
    const { Qcow2Image } = await import('../../formats/qcow2/index.js');
    const ro = await Qcow2Image.open(await LocalHostFile.open(roPath, { readOnly: true }), { readOnly: true });
    s = await serveImage(tmp.path, imagePath, { extra: { ro: { device: ro, readOnly: true } } });
    good = await RawClient.connect(s.socketPath);
    await good.negotiate('vol');
  });

  afterAll(async () => {
    good?.destroy();
    await s?.close();
    tmp?.cleanup();
  });

  /** The well-behaved connection: write a fresh pattern, read it back through structured replies. */
  async function goodStillWorks(): Promise<void> {
    const data = randomBytes(8192);
    const off = 40 * MiB + (goodCookie % 64) * 8192;
    const w = ++goodCookie;
    good.request(P.NBD_CMD_WRITE, w, off, data.length, 0, data);
    const wr = await good.reply();
    expect(wr).toMatchObject({ cookie: w, error: 0 });
    const r = ++goodCookie;
    good.request(P.NBD_CMD_READ, r, off, data.length);
    const rr = await good.reply(data.length, off);
    expect(rr.cookie).toBe(r);
    expect(rr.error).toBe(0);
    expect(Buffer.compare(rr.data ?? Buffer.alloc(0), data)).toBe(0);
  }

  async function connect(): Promise<RawClient> {
    return RawClient.connect(s.socketPath);
  }

  async function transmitting(name = 'vol', structured = true): Promise<RawClient> {
    const c = await connect();
    await c.negotiate(name, structured);
    return c;
  }

  async function expectClosed(c: RawClient): Promise<void> {
    expect(await c.waitClosed()).toBe(true);
    c.destroy();
    await goodStillWorks();
  }

  // --- handshake ---

  it('unknown client flags close the connection', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags(0xffffffff);
    await expectClosed(c);
  });

  it('bad option magic closes the connection', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags();
    const b = Buffer.alloc(16);
    b.write('NOTMAGIC', 0);
    c.write(b);
    await expectClosed(c);
  });

  it('unknown options get NBD_REP_ERR_UNSUP and negotiation continues', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags();
    c.sendOption(0x1234, Buffer.from('whatever'));
    expect((await c.optionReply()).type).toBe(P.NBD_REP_ERR_UNSUP);
    c.sendOption(P.NBD_OPT_STARTTLS);
    expect((await c.optionReply()).type).toBe(P.NBD_REP_ERR_UNSUP);
    c.sendOption(P.NBD_OPT_LIST, Buffer.from('x'));
    expect((await c.optionReply()).type).toBe(P.NBD_REP_ERR_INVALID);
    c.sendOption(P.NBD_OPT_LIST);
    const list = await c.optionReplies();
    expect(list.filter((r) => r.type === P.NBD_REP_SERVER)).toHaveLength(2);
    c.sendOption(P.NBD_OPT_ABORT);
    expect((await c.optionReply()).type).toBe(P.NBD_REP_ACK);
    await expectClosed(c);
  });

  it('malformed NBD_OPT_GO/INFO get NBD_REP_ERR_INVALID, unknown exports NBD_REP_ERR_UNKNOWN', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags();
    const lying = RawClient.goData('vol');
    lying.writeUInt32BE(1000, 0); // name length beyond the option data
    c.sendOption(P.NBD_OPT_GO, lying);
    expect((await c.optionReply()).type).toBe(P.NBD_REP_ERR_INVALID);
    c.sendOption(P.NBD_OPT_INFO, Buffer.concat([RawClient.goData('vol'), Buffer.from([1, 2, 3])]));
    expect((await c.optionReply()).type).toBe(P.NBD_REP_ERR_INVALID);
    c.sendOption(P.NBD_OPT_GO, Buffer.alloc(2));
    expect((await c.optionReply()).type).toBe(P.NBD_REP_ERR_INVALID);
    c.sendOption(P.NBD_OPT_GO, RawClient.goData('nope'));
    expect((await c.optionReply()).type).toBe(P.NBD_REP_ERR_UNKNOWN);
    c.sendOption(P.NBD_OPT_SET_META_CONTEXT, RawClient.metaData('vol', [P.NBD_META_BASE_ALLOCATION]));
    expect((await c.optionReply()).type).toBe(P.NBD_REP_ERR_INVALID); // no structured replies yet
    c.sendOption(P.NBD_OPT_LIST_META_CONTEXT, RawClient.metaData('vol', []));
    const listed = await c.optionReplies();
    expect(listed[0]?.type).toBe(P.NBD_REP_META_CONTEXT);
    expect(listed[0]?.data.subarray(4).toString()).toBe('base:allocation');
    // Still usable: a proper GO enters transmission.
    c.sendOption(P.NBD_OPT_GO, RawClient.goData('vol'));
    const go = await c.optionReplies();
    expect(go[go.length - 1]?.type).toBe(P.NBD_REP_ACK);
    c.request(P.NBD_CMD_READ, 1, 0, 4096);
    expect((await c.reply(4096)).error).toBe(0); // simple reply: no structured replies negotiated
    c.request(P.NBD_CMD_DISC, 2, 0, 0);
    await expectClosed(c);
  });

  it('NBD_OPT_EXPORT_NAME for an unknown export closes; a known one enters transmission', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags();
    c.sendOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('nope'));
    await expectClosed(c);
    const d = await connect();
    await d.greeting();
    d.sendClientFlags(P.NBD_FLAG_C_FIXED_NEWSTYLE); // without NO_ZEROES: 124 zero bytes follow
    d.sendOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('vol'));
    const reply = await d.mustRead(134);
    expect(Number(reply.readBigUInt64BE(0))).toBe(SIZE);
    expect(reply.subarray(10).every((x) => x === 0)).toBe(true);
    d.request(P.NBD_CMD_FLUSH, 7, 0, 0);
    expect(await d.reply()).toMatchObject({ cookie: 7, error: 0 });
    d.destroy();
    await goodStillWorks();
  });

  it('an option announcing a huge length closes the connection without buffering it', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags();
    c.sendOption(P.NBD_OPT_GO, Buffer.alloc(0), 0x7fffffff);
    await expectClosed(c);
  });

  it('truncated handshakes and abrupt disconnects leave the server working', async () => {
    for (let cut = 0; cut < 40; cut++) {
      const c = await connect();
      const bytes = Buffer.concat([
        Buffer.from([0, 0, 0, 3]),
        (() => {
          const h = Buffer.alloc(16);
          h.writeBigUInt64BE(P.NBD_IHAVEOPT, 0);
          h.writeUInt32BE(P.NBD_OPT_GO, 8);
          h.writeUInt32BE(9, 12);
          return h;
        })(),
        RawClient.goData('vol'),
      ]);
      c.write(bytes.subarray(0, cut));
      c.destroy();
    }
    await goodStillWorks();
  });

  // --- transmission ---

  it('unknown commands and invalid flags get EINVAL; the connection stays usable', async () => {
    const c = await transmitting();
    c.request(99, 1, 0, 512);
    expect(await c.reply()).toMatchObject({ cookie: 1, error: P.NBD_EINVAL });
    c.request(P.NBD_CMD_READ, 2, 0, 512, P.NBD_CMD_FLAG_NO_HOLE);
    expect(await c.reply()).toMatchObject({ cookie: 2, error: P.NBD_EINVAL });
    c.request(P.NBD_CMD_READ, 3, 0, 0);
    expect(await c.reply()).toMatchObject({ cookie: 3, error: P.NBD_EINVAL });
    c.request(P.NBD_CMD_READ, 4, 0, 512);
    expect(await c.reply(512)).toMatchObject({ cookie: 4, error: 0 });
    c.destroy();
    await goodStillWorks();
  });

  it('out-of-range requests get EINVAL, or ENOSPC for writes (whose payload is consumed)', async () => {
    const c = await transmitting();
    const cases: [number, number, number, number][] = [
      [P.NBD_CMD_READ, SIZE - 512, 1024, P.NBD_EINVAL],
      [P.NBD_CMD_READ, SIZE, 512, P.NBD_EINVAL],
      [P.NBD_CMD_READ, 2 ** 63, 512, P.NBD_EINVAL],
      [P.NBD_CMD_TRIM, SIZE - 4096, 8192, P.NBD_EINVAL],
      [P.NBD_CMD_CACHE, SIZE, 4096, P.NBD_EINVAL],
      [P.NBD_CMD_BLOCK_STATUS, SIZE + 1, 4096, P.NBD_EINVAL],
      [P.NBD_CMD_WRITE_ZEROES, SIZE - 4096, 8192, P.NBD_ENOSPC],
      [P.NBD_CMD_WRITE, SIZE - 512, 4096, P.NBD_ENOSPC],
      [P.NBD_CMD_READ, 0, 48 * MiB, P.NBD_EOVERFLOW], // within the export, above the maximum block size
    ];
    let cookie = 0;
    for (const [type, offset, length, errno] of cases) {
      cookie++;
      c.request(type, cookie, offset, length, 0, type === P.NBD_CMD_WRITE ? randomBytes(length) : undefined);
      expect(await c.reply(), `command ${type} at ${offset}+${length}`).toMatchObject({ cookie, error: errno });
    }
    c.request(P.NBD_CMD_BLOCK_STATUS, 100, 0, SIZE, P.NBD_CMD_FLAG_REQ_ONE);
    const bs = await c.reply();
    expect(bs).toMatchObject({ cookie: 100, error: 0, chunks: [P.NBD_REPLY_TYPE_BLOCK_STATUS] });
    c.destroy();
    await goodStillWorks();
  });

  it('WRITE_ZEROES (NO_HOLE, FAST_ZERO), TRIM with FUA, CACHE, FLUSH and READ with DF', async () => {
    const c = await transmitting();
    const off = 10 * MiB;
    const data = Buffer.alloc(256 * 1024, 0xcd);
    c.request(P.NBD_CMD_WRITE, 1, off, data.length, P.NBD_CMD_FLAG_FUA, data);
    expect(await c.reply()).toMatchObject({ cookie: 1, error: 0 });
    c.request(P.NBD_CMD_WRITE_ZEROES, 2, off, 65536, P.NBD_CMD_FLAG_NO_HOLE | P.NBD_CMD_FLAG_FUA);
    expect(await c.reply()).toMatchObject({ cookie: 2, error: 0 });
    c.request(P.NBD_CMD_WRITE_ZEROES, 3, off + 65536, 65536, P.NBD_CMD_FLAG_FAST_ZERO);
    expect(await c.reply()).toMatchObject({ cookie: 3, error: 0 });
    c.request(P.NBD_CMD_TRIM, 4, off + 131072, 65536, P.NBD_CMD_FLAG_FUA);
    expect(await c.reply()).toMatchObject({ cookie: 4, error: 0 });
    c.request(P.NBD_CMD_CACHE, 5, off, data.length);
    expect(await c.reply()).toMatchObject({ cookie: 5, error: 0 });
    c.request(P.NBD_CMD_FLUSH, 6, 0, 0);
    expect(await c.reply()).toMatchObject({ cookie: 6, error: 0 });
    const expected = Buffer.from(data);
    expected.fill(0, 0, 3 * 65536);
    c.request(P.NBD_CMD_READ, 7, off, data.length);
    const sparse = await c.reply(data.length, off);
    expect(Buffer.compare(sparse.data ?? Buffer.alloc(0), expected)).toBe(0);
    expect(sparse.chunks).toContain(P.NBD_REPLY_TYPE_OFFSET_DATA);
    c.request(P.NBD_CMD_READ, 8, off, data.length, P.NBD_CMD_FLAG_DF);
    const whole = await c.reply(data.length, off);
    expect(whole.chunks).toEqual([P.NBD_REPLY_TYPE_OFFSET_DATA]);
    expect(Buffer.compare(whole.data ?? Buffer.alloc(0), expected)).toBe(0);
    c.request(P.NBD_CMD_DISC, 9, 0, 0);
    await expectClosed(c);
  });

  it('a metadata context selected for one export does not apply to another', async () => {
    const c = await connect();
    await c.greeting();
    c.sendClientFlags();
    c.sendOption(P.NBD_OPT_STRUCTURED_REPLY);
    await c.optionReplies();
    c.sendOption(P.NBD_OPT_SET_META_CONTEXT, RawClient.metaData('ro', [P.NBD_META_BASE_ALLOCATION]));
    expect((await c.optionReplies()).map((r) => r.type)).toEqual([P.NBD_REP_META_CONTEXT, P.NBD_REP_ACK]);
    c.sendOption(P.NBD_OPT_GO, RawClient.goData('vol'));
    await c.optionReplies();
    c.request(P.NBD_CMD_BLOCK_STATUS, 1, 0, 4096);
    expect(await c.reply()).toMatchObject({ cookie: 1, error: P.NBD_EINVAL });
    c.destroy();
    await goodStillWorks();
  });

  it('writes to a read-only export get EPERM', async () => {
    const c = await transmitting('ro');
    const data = randomBytes(4096);
    c.request(P.NBD_CMD_WRITE, 1, 0, data.length, 0, data);
    expect(await c.reply()).toMatchObject({ cookie: 1, error: P.NBD_EPERM });
    c.request(P.NBD_CMD_TRIM, 2, 0, 4096);
    expect(await c.reply()).toMatchObject({ cookie: 2, error: P.NBD_EPERM });
    c.request(P.NBD_CMD_WRITE_ZEROES, 3, 0, 4096);
    expect(await c.reply()).toMatchObject({ cookie: 3, error: P.NBD_EPERM });
    c.request(P.NBD_CMD_READ, 4, 0, 4096);
    const r = await c.reply(4096);
    expect(r.error).toBe(0);
    expect(r.chunks).toEqual([P.NBD_REPLY_TYPE_OFFSET_HOLE]);
    expect(r.data?.every((x) => x === 0)).toBe(true);
    c.destroy();
    await goodStillWorks();
  });

  it('a 4 GiB write length gets an error and a closed connection, without allocating it', async () => {
    const c = await transmitting();
    const rssBefore = process.memoryUsage().rss;
    c.request(P.NBD_CMD_WRITE, 1, 0, 0xffffffff);
    c.write(randomBytes(1 * MiB)); // the start of a "payload"
    const r = await c.reply();
    expect(r.cookie).toBe(1);
    expect(r.error).not.toBe(0);
    await expectClosed(c);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(512 * MiB);
  });

  it('bad request magic closes the connection', async () => {
    const c = await transmitting();
    c.write(P.encodeRequestHeader({ magic: 0xdeadbeef, flags: 0, type: P.NBD_CMD_READ, cookieHi: 0, cookieLo: 1, offset: 0, lengthBytes: 512 }));
    await expectClosed(c);
  });

  it('truncated requests and disconnects with requests in flight leave the server working', async () => {
    const header = P.encodeRequestHeader({ flags: 0, type: P.NBD_CMD_WRITE, cookieHi: 0, cookieLo: 1, offset: 0, lengthBytes: 65536 });
    for (const cut of [1, 13, 27, 28, 28 + 100, 28 + 65535]) {
      const c = await transmitting();
      c.write(Buffer.concat([header, randomBytes(65536)]).subarray(0, cut));
      c.destroy();
    }
    const c = await transmitting();
    for (let i = 0; i < 64; i++) c.request(P.NBD_CMD_READ, i, (i % 32) * MiB, MiB);
    const data = randomBytes(MiB);
    for (let i = 0; i < 16; i++) c.request(P.NBD_CMD_WRITE, 100 + i, 48 * MiB + (i % 4) * MiB, MiB, 0, data);
    c.destroy();
    await goodStillWorks();
  });

  it('random garbage in handshake and transmission: a protocol error or a close, never a crash', async () => {
    for (let i = 0; i < 60; i++) {
      const c = i % 2 === 0 ? await connect() : await transmitting();
      c.write(randomBytes(1 + Math.floor(Math.random() * 4096)));
      // Whatever comes back, the server must either answer or close; then hang up.
      await c.read(1, 50);
      c.destroy();
    }
    await goodStillWorks();
  });

  it('pipelined requests with a small in-flight cap: every reply arrives, data intact', async () => {
    const dir = makeTempDir();
    const img = createImage(dir.path, 16 * MiB, 'cap.qcow2');
    const capped = await serveImage(dir.path, img, { maxInFlightBytes: MiB });
    try {
      const c = await RawClient.connect(capped.socketPath);
      await c.negotiate('vol', false);
      const blocks = 64;
      const bs = 128 * 1024;
      const payloads = Array.from({ length: blocks }, () => randomBytes(bs));
      payloads.forEach((p, i) => c.request(P.NBD_CMD_WRITE, i, i * bs, bs, 0, p));
      for (let i = 0; i < blocks; i++) c.request(P.NBD_CMD_READ, 1000 + i, i * bs, bs);
      // Replies may come in any order: simple replies carry data only for reads (cookies >= 1000).
      const seen = new Set<number>();
      for (let i = 0; i < 2 * blocks; i++) {
        const h = await c.mustRead(16);
        expect(h.readUInt32BE(0)).toBe(P.NBD_SIMPLE_REPLY_MAGIC);
        expect(h.readUInt32BE(4)).toBe(0);
        const cookie = h.readUInt32BE(12);
        if (cookie >= 1000) await c.mustRead(bs);
        seen.add(cookie);
      }
      expect(seen.size).toBe(2 * blocks);
      for (let i = 0; i < blocks; i += 7) {
        c.request(P.NBD_CMD_READ, 5000 + i, i * bs, bs);
        const r = await c.reply(bs);
        expect(Buffer.compare(r.data ?? Buffer.alloc(0), payloads[i] ?? Buffer.alloc(0))).toBe(0);
      }
      c.destroy();
    } finally {
      await capped.close();
      dir.cleanup();
    }
  });

  it('large pipelined writes through a paused socket keep their byte order (payloads read directly from the socket)', async () => {
    // The in-flight cap pauses the socket while Node's stream may still hold bytes read by libuv;
    // a payload read straight from the descriptor then must not overtake them.
    const dir = makeTempDir();
    const img = createImage(dir.path, 64 * MiB, 'order.qcow2');
    const capped = await serveImage(dir.path, img, { maxInFlightBytes: MiB });
    try {
      const c = await RawClient.connect(capped.socketPath);
      await c.negotiate('vol', false);
      for (let round = 0; round < 3; round++) {
        const blocks = 24;
        const bs = (512 + 256 * round) * 1024;
        const payloads = Array.from({ length: blocks }, () => randomBytes(bs));
        payloads.forEach((p, i) => c.request(P.NBD_CMD_WRITE, i, i * bs, bs, 0, p));
        for (let i = 0; i < blocks; i++) {
          const h = await c.mustRead(16);
          expect(h.readUInt32BE(4)).toBe(0);
        }
        for (let i = 0; i < blocks; i++) {
          c.request(P.NBD_CMD_READ, 100 + i, i * bs, bs);
          const r = await c.reply(bs);
          expect(Buffer.compare(r.data ?? Buffer.alloc(0), payloads[i] ?? Buffer.alloc(0)), `round ${round} block ${i}`).toBe(0);
        }
      }
      c.destroy();
    } finally {
      await capped.close();
      dir.cleanup();
    }
  });

  it('after all of it, the well-behaved connection and a real client still work', async () => {
    await goodStillWorks();
    const r = await runAsync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', '-c', 'read -P 0x5a 1M 64k', s.uri()]);
    expect(r.code, r.stderr).toBe(0);
    // Hostile connections are gone; only the good one remains (give closes a moment).
    for (let i = 0; i < 50 && s.server.connectionCount > 1; i++) await new Promise((res) => setTimeout(res, 100));
    expect(s.server.connectionCount).toBe(1);
  });
});

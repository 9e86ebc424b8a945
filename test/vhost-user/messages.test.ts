/** vhost-user wire format: codec round trips, per-request size/descriptor validation, stream framing. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as M from '../../src/export/vhost-user/messages.js';

function msg(request: number, payload: Uint8Array, fds: number[] = [], flags = M.VHOST_USER_VERSION): M.Message {
  return { header: { request, flags, sizeBytes: payload.length }, payload, fds };
}

const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const u32 = fc.integer({ min: 0, max: 2 ** 32 - 1 });

describe('vhost-user messages', () => {
  it('header and reply encoding', () => {
    const m = M.encodeMessage(M.Request.GET_VRING_BASE, M.VHOST_USER_VERSION | M.FLAG_NEED_REPLY, M.encodeVringState({ index: 1, num: 0 }));
    expect(m.length).toBe(M.HEADER_BYTES + 8);
    expect(M.decodeHeader(m)).toEqual({ request: 11, flags: 0x9, sizeBytes: 8 });
    const r = M.encodeReply(M.Request.GET_FEATURES, M.encodeU64(5n));
    expect(M.decodeHeader(r)).toEqual({ request: 1, flags: 0x5, sizeBytes: 8 });
    expect(M.decodeU64(r.subarray(M.HEADER_BYTES))).toBe(5n);
    expect(M.requestName(24)).toBe('GET_CONFIG');
    expect(M.requestName(99)).toBe('request 99');
  });

  it('payload codecs round-trip', () => {
    fc.assert(
      fc.property(u64, u32, u32, (v, a, b) => {
        expect(M.decodeU64(M.encodeU64(v))).toBe(v);
        expect(M.decodeVringState(M.encodeVringState({ index: a, num: b }))).toEqual({ index: a, num: b });
      }),
    );
    fc.assert(
      fc.property(u32, u32, u64, u64, u64, u64, (index, flags, d, u, a, l) => {
        const addr = { index, flags, descFrontendAddr: d, usedFrontendAddr: u, availFrontendAddr: a, logGuestAddr: l };
        const enc = M.encodeVringAddr(addr);
        expect(enc.length).toBe(M.VRING_ADDR_BYTES);
        expect(M.decodeVringAddr(enc)).toEqual(addr);
      }),
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(u64, u64, u64, u64), { minLength: 1, maxLength: 8 }), (rs) => {
        const regions = rs.map(([guestAddr, sizeBytes, frontendAddr, mmapOffsetBytes]) => ({ guestAddr, sizeBytes, frontendAddr, mmapOffsetBytes }));
        const table = M.encodeMemoryTable(regions);
        expect(M.decodeMemoryTable(table)).toEqual(regions);
        expect(M.validateMessage(msg(M.Request.SET_MEM_TABLE, table, regions.map((_, i) => 10 + i)))).toBeUndefined();
        expect(M.decodeSingleRegion(M.encodeSingleRegion(regions[0]!))).toEqual(regions[0]);
      }),
    );
    const inflight = { mmapSizeBytes: 8256n, mmapOffsetBytes: 0n, queueCount: 2, queueSize: 128 };
    expect(M.decodeInflight(M.encodeInflight(inflight))).toEqual(inflight);
    expect(M.encodeInflight(inflight, 20).length).toBe(20);
    const data = Uint8Array.from([1, 2, 3, 4, 5]);
    const c = M.decodeConfig(M.encodeConfig({ offset: 0x100, sizeBytes: 5, flags: 1, data }));
    expect(c.offset).toBe(0x100);
    expect(c.flags).toBe(1);
    expect([...c.data]).toEqual([1, 2, 3, 4, 5]);
  });

  it('validates payload sizes and descriptor counts per request', () => {
    const R = M.Request;
    const ok = (m: M.Message) => expect(M.validateMessage(m)).toBeUndefined();
    const bad = (m: M.Message, re: RegExp) => expect(M.validateMessage(m)).toMatch(re);

    ok(msg(R.GET_FEATURES, new Uint8Array(0)));
    bad(msg(R.GET_FEATURES, new Uint8Array(8)), /expected 0/);
    ok(msg(R.SET_FEATURES, new Uint8Array(8)));
    bad(msg(R.SET_FEATURES, new Uint8Array(4)), /expected 8/);
    bad(msg(R.SET_VRING_ADDR, new Uint8Array(32)), /expected 40/);
    bad(msg(R.SET_VRING_NUM, new Uint8Array(8), [5]), /1 file descriptors attached \(expected 0\)/);

    // kick/call/err: one fd unless bit 8 says "no fd".
    ok(msg(R.SET_VRING_KICK, M.encodeU64(1n), [7]));
    bad(msg(R.SET_VRING_KICK, M.encodeU64(1n)), /0 file descriptors.*expected 1/);
    ok(msg(R.SET_VRING_CALL, M.encodeU64(0x100n)));
    bad(msg(R.SET_VRING_ERR, M.encodeU64(0x100n), [7]), /expected 0/);

    // Memory table: 1..8 regions, exact size, one fd per region.
    const two = M.encodeMemoryTable([
      { guestAddr: 0n, sizeBytes: 4096n, frontendAddr: 0x1000n, mmapOffsetBytes: 0n },
      { guestAddr: 0x10000n, sizeBytes: 4096n, frontendAddr: 0x2000n, mmapOffsetBytes: 0n },
    ]);
    ok(msg(R.SET_MEM_TABLE, two, [3, 4]));
    bad(msg(R.SET_MEM_TABLE, two, [3]), /expected 2/);
    bad(msg(R.SET_MEM_TABLE, two.subarray(0, 40), [3, 4]), /expected 72/);
    const nine = new Uint8Array(8 + 9 * 32);
    new DataView(nine.buffer).setUint32(0, 9, true);
    bad(msg(R.SET_MEM_TABLE, nine, [1, 2, 3, 4, 5, 6, 7, 8, 9]), /9 regions/);
    const zero = new Uint8Array(8);
    bad(msg(R.SET_MEM_TABLE, zero), /0 regions/);

    ok(msg(R.ADD_MEM_REG, new Uint8Array(40), [3]));
    bad(msg(R.ADD_MEM_REG, new Uint8Array(40)), /expected 1/);
    ok(msg(R.REM_MEM_REG, new Uint8Array(40)));
    ok(msg(R.REM_MEM_REG, new Uint8Array(40), [3])); // tolerated, closed by the back-end
    bad(msg(R.REM_MEM_REG, new Uint8Array(40), [3, 4]), /expected 0\.\.1/);

    // Config: header + size bytes, size <= 256.
    ok(msg(R.GET_CONFIG, M.encodeConfig({ offset: 0, sizeBytes: 57, flags: 0, data: new Uint8Array(57) })));
    const lying = M.encodeConfig({ offset: 0, sizeBytes: 57, flags: 0, data: new Uint8Array(57) });
    bad(msg(R.GET_CONFIG, lying.subarray(0, 30)), /does not match config size 57/);
    bad(msg(R.GET_CONFIG, M.encodeConfig({ offset: 0, sizeBytes: 300, flags: 0, data: new Uint8Array(300) })), /exceeds 256/);
    bad(msg(R.SET_CONFIG, new Uint8Array(4)), /shorter/);

    ok(msg(R.GET_INFLIGHT_FD, new Uint8Array(24)));
    ok(msg(R.SET_INFLIGHT_FD, new Uint8Array(24), [9]));
    bad(msg(R.SET_INFLIGHT_FD, new Uint8Array(24)), /expected 1/);
    bad(msg(R.GET_INFLIGHT_FD, new Uint8Array(16)), /expected 24/);

    // Unknown / unsupported requests, reply flag, version.
    bad(msg(R.SET_LOG_BASE, new Uint8Array(16), [3]), /unsupported request/);
    bad(msg(999, new Uint8Array(0)), /unsupported request/);
    bad(msg(R.GET_FEATURES, new Uint8Array(0), [], M.VHOST_USER_VERSION | M.FLAG_REPLY), /reply flag/);
    bad(msg(R.GET_FEATURES, new Uint8Array(0), [], 2), /version 2/);
    expect(M.isKnownRequest(R.GET_CONFIG)).toBe(true);
    expect(M.isKnownRequest(R.SET_LOG_FD)).toBe(false);
  });

  it('frames a byte stream split anywhere, descriptors attached to their message', () => {
    const a = M.encodeMessage(M.Request.SET_VRING_KICK, 1, M.encodeU64(0n));
    const b = M.encodeMessage(M.Request.GET_FEATURES, 1);
    const c = M.encodeMessage(M.Request.SET_FEATURES, 1, M.encodeU64(7n));
    const stream = Buffer.concat([a, b, c]);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 50 }), (chunkSizes) => {
        // The fake socket hands out at most the next chunk size per call, never past what was asked.
        let pos = 0;
        let i = 0;
        let fdsSent = false;
        const recv: M.RecvFn = (maxBytes) => {
          if (pos >= stream.length) return 'again';
          const n = Math.min(maxBytes, chunkSizes[i++ % chunkSizes.length]!, stream.length - pos);
          const data = stream.subarray(pos, pos + n);
          const fds = !fdsSent ? [42] : [];
          fdsSent = true;
          pos += n;
          return { data: Uint8Array.from(data), fds };
        };
        const framer = new M.MessageFramer(recv);
        const got: M.Message[] = [];
        for (let k = 0; k < 100 && got.length < 3; k++) got.push(...framer.read().messages);
        expect(got.map((m) => m.header.request)).toEqual([12, 1, 2]);
        expect(got[0]!.fds).toEqual([42]);
        expect(got[1]!.fds).toEqual([]);
        expect(M.decodeU64(got[2]!.payload)).toBe(7n);
        expect(framer.dispose()).toEqual([]);
      }),
    );
  });

  it('refuses an oversized payload and reports end of stream', () => {
    const huge = new Uint8Array(12);
    const v = new DataView(huge.buffer);
    v.setUint32(0, M.Request.SET_MEM_TABLE, true);
    v.setUint32(4, 1, true);
    v.setUint32(8, 1 << 20, true);
    let served = false;
    const framer = new M.MessageFramer(() => {
      if (served) return 'eof';
      served = true;
      return { data: huge, fds: [5] };
    });
    expect(() => framer.read()).toThrow(M.FramingError);
    expect(framer.dispose()).toEqual([5]);
    expect(framer.read()).toEqual({ messages: [], eof: true });
  });
});

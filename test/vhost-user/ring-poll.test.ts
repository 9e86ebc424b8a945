/**
 * Polling of a drained ring (RingPollOptions): after serving a burst, the back-end keeps checking
 * the ring for the guest's next request, its kicks still suppressed, for the poll window; then it
 * asks for kicks again. What a guest sees, with EVENT_IDX and without:
 * - a request published in the window without a kick is served (it would wait forever otherwise);
 * - with polling off, while the event loop waits for a CPU, or after a large request, it is not,
 *   until the guest kicks;
 * - once the window is over, a driver that kicks only when the ring asks (as Linux's does) is
 *   asked again: its next request is served.
 *
 * The export runs in this process over a RAM disk, driven by the TypeScript front-end.
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { VhostUserBlkExport } from '../../src/export/vhost-user/export.js';
import type { RingPollOptions } from '../../src/export/vhost-user/rings.js';
import { RamDevice } from '../support/ram-device.js';
import { makeTempDir } from '../support/tmp.js';
import { BlkType, DescFlag, VhostUserFrontend, type RawDescriptor } from './frontend.js';
import { race, SETTLE_MS } from './hostile-helpers.js';

const SIZE_BYTES = 1024 * 1024;
/** Longer than any wait below: the window is still open when the un-kicked request is published. */
const WIDE_WINDOW_US = 10_000_000;

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function connect(poll: RingPollOptions, eventIdx: boolean): Promise<{ fe: VhostUserFrontend; exp: VhostUserBlkExport }> {
  const tmp = makeTempDir();
  const socketPath = path.join(tmp.path, 'poll.sock');
  const exp = new VhostUserBlkExport({ socketPath, queueCount: 1, readOnly: false, serial: 'ring-poll', poll });
  await exp.start(new RamDevice(SIZE_BYTES));
  const fe = await VhostUserFrontend.connect(socketPath, { eventIdx, maxRequestBytes: 512 * 1024 });
  cleanups.push(async () => {
    fe.close();
    exp.requestShutdown();
    await exp.closed;
    tmp.cleanup();
  });
  return { fe, exp };
}

/** A 4 KiB read of sector 8 as [header, data, status], published without a kick. */
function unkickedRead(fe: VhostUserFrontend): Promise<unknown> {
  const header = fe.scratchHeader(BlkType.IN, 8);
  const data = fe.allocScratch(4096);
  const status = fe.allocScratch(1, 1);
  const chain: RawDescriptor[] = [
    { addr: header.guestAddr, len: 16, flags: DescFlag.NEXT },
    { addr: data.guestAddr, len: 4096, flags: DescFlag.NEXT | DescFlag.WRITE },
    { addr: status.guestAddr, len: 1, flags: DescFlag.WRITE },
  ];
  return fe.submitChain(chain, { noKick: true }).done;
}

describe('vhost-user ring polling: options', () => {
  it('refuses a poll window that is not a number of microseconds >= 0 (one that never ends)', () => {
    for (const windowUs of [Number.NaN, -1, Number.POSITIVE_INFINITY]) {
      expect(() => new VhostUserBlkExport({ socketPath: '/tmp/unused.sock', queueCount: 1, readOnly: false, serial: 'x', poll: { windowUs } })).toThrow(/ring poll window/);
    }
  });
});

describe.each([true, false])('vhost-user ring polling (EVENT_IDX %s)', (eventIdx) => {
  it('serves a request published in the window without a kick', async () => {
    const { fe, exp } = await connect({ windowUs: WIDE_WINDOW_US, contention: { waitShare: () => 0 } }, eventIdx);
    expect((await fe.read(0, 4096)).length).toBe(4096);
    // The ring does not ask for a kick while it is polled: that is the VM exit polling spares.
    expect(fe.queue(0).kickWanted()).toBe(false);
    expect(await race(unkickedRead(fe), SETTLE_MS)).not.toBe('timeout');
    // And again: the poll that the second request's pass started catches a third.
    expect(await race(unkickedRead(fe), SETTLE_MS)).not.toBe('timeout');
    expect(exp.stats()).toMatchObject({ requests: 3, ringPolls: 3, ringPollHits: 2 });
  });

  it('with polling off, or while the event loop waits for a CPU, waits for the kick', async () => {
    for (const poll of [{ windowUs: 0 }, { windowUs: WIDE_WINDOW_US, contention: { waitShare: () => 0.9 } }]) {
      const { fe, exp } = await connect(poll, eventIdx);
      expect((await fe.read(0, 4096)).length).toBe(4096);
      expect(fe.queue(0).kickWanted()).toBe(true);
      const second = unkickedRead(fe);
      expect(await race(second, SETTLE_MS)).toBe('timeout');
      fe.kick(0);
      expect(await race(second, SETTLE_MS)).not.toBe('timeout');
      expect(exp.stats()).toMatchObject({ requests: 2, ringPollHits: 0 });
    }
  });

  it('does not poll after a large request: the next one waits for its kick', async () => {
    const { fe, exp } = await connect({ windowUs: WIDE_WINDOW_US, contention: { waitShare: () => 0 } }, eventIdx);
    expect((await fe.read(0, 512 * 1024)).length).toBe(512 * 1024);
    expect(fe.queue(0).kickWanted()).toBe(true);
    const second = unkickedRead(fe);
    expect(await race(second, SETTLE_MS)).toBe('timeout');
    fe.kick(0);
    expect(await race(second, SETTLE_MS)).not.toBe('timeout');
    // Only the 4 KiB read's pass began a poll (still open: nothing to catch).
    expect(exp.stats()).toMatchObject({ requests: 2, ringPolls: 1, ringPollHits: 0 });
  });

  it('asks for kicks again once the window is over: a driver that kicks only when asked is served', async () => {
    const { fe } = await connect({ windowUs: 20_000, contention: { waitShare: () => 0 } }, eventIdx);
    expect((await fe.read(0, 4096)).length).toBe(4096);
    await sleep(300); // the 20 ms window has run out
    expect(fe.queue(0).kickWanted()).toBe(true);
    // fe.read kicks only if the ring asks for it (EVENT_IDX avail_event, or no NO_NOTIFY flag).
    expect(await race(fe.read(8, 4096), SETTLE_MS)).toBeInstanceOf(Uint8Array);
  });
});

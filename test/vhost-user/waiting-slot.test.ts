/**
 * One front-end at a time per socket, and one waiting slot for a front-end that arrives while the
 * previous connection is still being released (its requests in flight finishing). A connection
 * that hangs up must not hold that slot: after a burst of front-ends that connect and close at
 * once, the next real front-end is served, every time.
 *
 * The export runs in this process over a RAM disk whose flushes wait until the test lets them go:
 * the previous front-end hangs up with a flush in flight, so its connection is being released for
 * as long as the test wants, and the burst and the real front-end land in exactly that window.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExportLogLevel } from '../../src/export/log.js';
import { VhostUserBlkExport } from '../../src/export/vhost-user/export.js';
import { RamDevice } from '../support/ram-device.js';
import { makeTempDir } from '../support/tmp.js';
import { VhostUserFrontend } from './frontend.js';
import { hangUpBurst } from './hang-up-burst.js';

const SIZE_BYTES = 4 * 1024 * 1024;
const BURST_CONNECTIONS = 50;
const ROUNDS = 3;

/** A RAM disk whose flushes wait for release(). */
class HeldFlushDevice extends RamDevice {
  private held: Array<() => void> | undefined;
  flushesWaiting = 0;

  constructor() {
    super(SIZE_BYTES);
  }

  holdFlushes(): void {
    this.held = [];
  }

  releaseFlushes(): void {
    const held = this.held ?? [];
    this.held = undefined;
    this.flushesWaiting = 0;
    for (const go of held) go();
  }

  override async flush(): Promise<void> {
    const held = this.held;
    if (held === undefined) return;
    this.flushesWaiting++;
    await new Promise<void>((resolve) => held.push(resolve));
  }
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await nextTurn();
  }
}

describe('vhost-user-blk: the waiting slot', () => {
  let tmp: { path: string; cleanup: () => void };
  let exp: VhostUserBlkExport;
  const device = new HeldFlushDevice();
  const logs: Array<{ line: string; level: ExportLogLevel }> = [];

  beforeAll(async () => {
    tmp = makeTempDir();
    exp = new VhostUserBlkExport({
      socketPath: path.join(tmp.path, 'slot.sock'),
      queueCount: 1,
      readOnly: false,
      serial: 'waiting-slot',
      logger: (line, level) => logs.push({ line, level }),
    });
    await exp.start(device);
  });
  afterAll(async () => {
    device.releaseFlushes();
    exp?.requestShutdown();
    await exp?.closed;
    tmp?.cleanup();
  });

  it(`after ${BURST_CONNECTIONS} connect+close while the previous connection is released, the next front-end is served (${ROUNDS} rounds)`, async () => {
    const socketPath = path.join(tmp.path, 'slot.sock');
    for (let round = 0; round < ROUNDS; round++) {
      // The previous front-end hangs up with a flush in flight: its connection stays in release.
      const previous = await VhostUserFrontend.connect(socketPath);
      device.holdFlushes();
      const flushed = previous.flush().catch(() => 'cut off');
      await until(() => device.flushesWaiting > 0, 'the flush to reach the device');
      previous.close();
      await flushed;

      await hangUpBurst(socketPath, BURST_CONNECTIONS);
      const logsBefore = logs.length;
      const next = VhostUserFrontend.connect(socketPath);
      next.catch(() => {}); // awaited below
      // The export has taken the front-end in (or turned it away) before the slot frees up.
      await Promise.race([next, until(() => logs.slice(logsBefore).some((l) => /waits for the previous connection/.test(l.line)), 'the front-end to be taken in')]);
      device.releaseFlushes();

      const fe = await next;
      try {
        const data = new Uint8Array(64 * 1024).fill(round + 1);
        await fe.write(round * 128, data);
        expect(Buffer.from(await fe.read(round * 128, data.length)).equals(data), `round ${round}`).toBe(true);
      } finally {
        fe.close();
      }
      await until(() => !exp.stats().connected, 'the front-end to be gone');
    }
    // Connections that hung up are no second front-end: nothing to warn about.
    expect(logs.filter((l) => l.level === 'warn').map((l) => l.line)).toEqual([]);
  }, 60_000);
});

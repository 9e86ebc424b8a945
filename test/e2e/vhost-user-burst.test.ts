/**
 * vhost-user-blk through the daemon, without a VM: a burst of front-ends that connect and hang up
 * at once (a crash-looping VM manager, a health check) must not keep the next real front-end out.
 * One front-end at a time is the design; a connection waiting for that slot that has already hung
 * up must give it up to one that is still there. The real front-end is the TypeScript one of
 * test/vhost-user/frontend.ts (QEMU's message sequence) and does I/O after each burst.
 */
import { describe, expect, it } from 'vitest';
import { VhostUserFrontend } from '../vhost-user/frontend.js';
import { hangUpBurst } from '../vhost-user/hang-up-burst.js';
import { assertBuilt, patternBytes, useDaemon } from './harness.js';

assertBuilt();

const BURST_CONNECTIONS = 50;
const ROUNDS = 5;
const SECTOR_BYTES = 512;
const IO_BYTES = 64 * 1024;

describe('vhost-user-blk: front-ends that hang up at once', () => {
  const suite = useDaemon();

  it(`after ${BURST_CONNECTIONS} connect+close in a row, the next front-end is served (${ROUNDS} rounds)`, async () => {
    const { d } = suite;
    const socketPath = suite.file('burst.sock');
    d.cliOk(['volume', 'create', 'burst', '16M']);
    d.cliOk(['volume', 'attach', 'burst', '--vhost-user', socketPath]);
    for (let round = 0; round < ROUNDS; round++) {
      await hangUpBurst(socketPath, BURST_CONNECTIONS);
      const fe = await VhostUserFrontend.connect(socketPath);
      try {
        const data = patternBytes(IO_BYTES, round + 1);
        const sector = round * (IO_BYTES / SECTOR_BYTES);
        await fe.write(sector, data);
        await fe.flush();
        expect(Buffer.from(await fe.read(sector, IO_BYTES)).equals(data), `round ${round}: read back what was written`).toBe(true);
        await fe.stop();
      } finally {
        fe.close();
      }
    }
    // A connection that hung up is no second front-end: none was refused as one (each such
    // refusal is what turned away a real front-end that came right after the burst).
    expect(d.logs()).not.toMatch(/refused a second front-end connection/);
  }, 60_000);
});

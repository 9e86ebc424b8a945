/**
 * A client that hangs up is not a problem to warn about: the daemon logs EPIPE / ECONNRESET from
 * a client that went away (after an error reply, killed, reset) at debug, on NBD (unix socket and
 * TCP) and on vhost-user sockets. Real protocol errors stay warnings. Read from the daemon's own
 * log, at --log-level debug so that the hang-ups show and their level can be checked.
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import * as P from '../../src/export/nbd/protocol.js';
import { UnixStream } from '../../src/sys/unix-socket.js';
import { RawClient } from '../nbd/raw-client.js';
import { encodeMessage, FLAG_NEED_REPLY, FLAG_VERSION, VhostUserRequest } from '../vhost-user/frontend.js';
import { assertBuilt, useDaemon } from './harness.js';

assertBuilt();

const LOG_POLL_MS = 20;
const LOG_WAIT_MS = 15_000;
const HANG_UP = /EPIPE|ECONNRESET|Broken pipe|reset by peer/;

describe('client hang-ups in the daemon log', () => {
  const suite = useDaemon({ args: ['--log-level', 'debug'] });
  const d = () => suite.d;
  let logStart = 0;

  /** Log lines since the test began. */
  const lines = () => d().logs().slice(logStart).split('\n').filter((l) => l !== '');
  /** Waits for the daemon to log a line matching re (its log is how it reports the event). */
  async function logged(re: RegExp): Promise<string> {
    const deadline = Date.now() + LOG_WAIT_MS;
    for (;;) {
      const found = lines().find((l) => re.test(l));
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`the daemon did not log ${re}:\n${lines().join('\n')}`);
      await sleep(LOG_POLL_MS);
    }
  }

  /** Waits for at least `count` log lines matching re. */
  async function loggedTimes(re: RegExp, count: number): Promise<string[]> {
    const deadline = Date.now() + LOG_WAIT_MS;
    for (;;) {
      const found = lines().filter((l) => re.test(l));
      if (found.length >= count) return found;
      if (Date.now() > deadline) throw new Error(`the daemon logged ${re} ${found.length} times, not ${count}:\n${lines().join('\n')}`);
      await sleep(LOG_POLL_MS);
    }
  }

  beforeAll(() => {
    d().cliOk(['volume', 'create', 'vol', '4M']);
    d().cliOk(['volume', 'export-nbd', 'vol']);
    d().cliOk(['volume', 'create', 'vol2', '4M']);
    d().cliOk(['volume', 'attach', 'vol2', '--vhost-user', suite.file('vol2.sock')]);
  });

  it('NBD: a client that sends a bad request and hangs up is logged at debug; a protocol error warns', async () => {
    logStart = d().logs().length;
    const [host, port] = d().nbdAddress!.split(':') as [string, string];
    expect(host).toBe('127.0.0.1');
    // Unix socket: a read past the end (an error reply), then close at once.
    const unix = await RawClient.connect(path.join(d().dataDir, 'nbd.sock'));
    await unix.negotiate('default/vol');
    unix.request(P.NBD_CMD_READ, 1, 8 << 20, 4096);
    unix.destroy();
    // TCP: the same, then a reset (RST) instead of a close.
    const tcp = await RawClient.connectTcp(Number(port));
    await tcp.negotiate('default/vol');
    tcp.request(P.NBD_CMD_READ, 1, 8 << 20, 4096);
    tcp.socket.resetAndDestroy();
    // Each hang-up is one debug line. Which errno the server meets depends on timing (its error
    // reply hits EPIPE, or its read meets the reset first), not on the kind of socket.
    await loggedTimes(/DEBUG.*nbd connection error: .*(EPIPE|ECONNRESET)/, 2);
    // A real protocol violation still warns.
    const bad = await RawClient.connect(path.join(d().dataDir, 'nbd.sock'));
    await bad.negotiate('default/vol');
    bad.write(Buffer.alloc(P.NBD_REQUEST_HEADER_BYTES, 0xee));
    await logged(/WARN .*nbd: closing connection: bad request magic/);
    bad.destroy();
    expect(lines().filter((l) => /WARN/.test(l) && HANG_UP.test(l))).toEqual([]);
  });

  it('vhost-user: a front-end that hangs up with a reply unread is a disconnect, not a protocol error; a protocol error warns', async () => {
    logStart = d().logs().length;
    const socketPath = suite.file('vol2.sock');
    // GET_FEATURES, then close with the reply unread: the back-end's next read meets ECONNRESET.
    const s = UnixStream.connect(socketPath);
    s.sendMessage(encodeMessage({ request: VhostUserRequest.GET_FEATURES, flags: FLAG_VERSION }));
    await new Promise<void>((resolve) => s.onReadable(() => {
      s.stopWatching();
      resolve();
    }));
    s.close();
    await logged(/DEBUG.*front-end hung up: .*ECONNRESET/);
    await logged(/INFO .*connection closed: front-end disconnected/);
    // A malformed message (a request that does not exist, reply wanted) is an operator's problem.
    const bad = UnixStream.connect(socketPath);
    bad.sendMessage(encodeMessage({ request: 9999, flags: FLAG_VERSION | FLAG_NEED_REPLY }));
    await logged(/WARN .*vhost-user-blk .*(refused|protocol error)/);
    bad.close();
    expect(lines().filter((l) => /protocol error/.test(l) && HANG_UP.test(l))).toEqual([]);
    expect(lines().filter((l) => /WARN/.test(l) && HANG_UP.test(l))).toEqual([]);
  });
});

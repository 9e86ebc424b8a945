/**
 * Right after a restart: clients that dial the moment a listener accepts (a backup job retrying,
 * qemu's NBD reconnect, a VM's vhost-user reconnect, a script polling the API) must find the
 * daemon whole, never half-started: no "no export named ...", no 404 for an export that is about
 * to be restored.
 *
 * The daemon is killed with SIGKILL and restarted with STRATA_TEST_RESTORE_DELAY_MS, which widens
 * the moment between binding the NBD listeners and restoring the exports: the dialers, already
 * spinning when the daemon starts, land in it every time.
 */
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as P from '../../src/export/nbd/protocol.js';
import { RawClient } from '../nbd/raw-client.js';
import { makeTempDir } from '../support/tmp.js';
import { qemuIo, requireTool } from '../support/tools.js';
import { VhostUserFrontend } from '../vhost-user/frontend.js';
import { assertBuilt, patternBytes, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
/** Long enough that every dialer gets in before the exports are back, on a loaded machine too. */
const RESTORE_DELAY_MS = 1500;
const DIAL_DEADLINE_MS = 60_000;
/** The listener is not (yet) there: the daemon is starting, dial again. */
const NOT_LISTENING = new Set(['ECONNREFUSED', 'ENOENT']);

/** A TCP port that was free a moment ago (the daemon must get the same one across the restart). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Calls attempt until it stops failing with "not listening"; any other failure is the answer. */
async function dial<T>(what: string, attempt: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + DIAL_DEADLINE_MS;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === undefined || !NOT_LISTENING.has(code) || Date.now() > deadline) throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** Connects as soon as the NBD listener accepts, selects the export, reads its first bytes. */
async function nbdClient(connect: () => Promise<RawClient>, name: string, lengthBytes: number): Promise<Buffer> {
  const client = await dial(`NBD ${name}`, connect);
  try {
    await client.negotiate(name);
    client.request(P.NBD_CMD_READ, 1, 0, lengthBytes);
    const reply = await client.reply(lengthBytes);
    expect(reply.error).toBe(0);
    return reply.data!;
  } finally {
    client.destroy();
  }
}

describe.skipIf(!requireTool('qemu-io'))('restart: clients that dial at once find the daemon whole', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);

  beforeAll(() => {
    // Not /dev/shm: the unix socket paths must stay short.
    tmp = makeTempDir();
  });
  afterAll(async () => {
    await d?.stop();
    tmp?.cleanup();
  });

  it('NBD over TCP and the unix socket, a vhost-user front-end and the API, dialing from before the restart', async () => {
    const dataDir = f('data');
    const [apiPort, nbdPort] = [await freePort(), await freePort()];
    const args = ['--data-dir', dataDir, '--listen', `127.0.0.1:${apiPort}`, '--nbd-listen', `127.0.0.1:${nbdPort}`];
    const nbdSocket = path.join(dataDir, 'nbd.sock');
    const vhostSocket = f('vm.sock');
    d = await startDaemon(dataDir, { args, replaceArgs: true });
    d.cliOk(['volume', 'create', 'gap', '4M']);
    d.cliOk(['volume', 'create', 'vm', '4M']);
    const exp = d.json<{ id: string }>(['volume', 'export-nbd', 'gap']);
    d.cliOk(['volume', 'attach', 'vm', '--vhost-user', vhostSocket]);
    expect(qemuIo(['-f', 'raw', '-c', 'write -P 0x5a 0 1M', `nbd://127.0.0.1:${nbdPort}/default/gap`]).code).toBe(0);
    const written = Buffer.alloc(MiB, 0x5a);
    const url = d.url;
    const token = d.token;
    await d.kill();

    // Every dialer spins before the daemon is started again.
    const overTcp = nbdClient(() => RawClient.connectTcp(nbdPort), 'default/gap', MiB);
    const overUnix = nbdClient(() => RawClient.connect(nbdSocket), 'default/gap', MiB);
    const api = dial('GET /v1/exports/ID', () => fetch(`${url}/v1/exports/${exp.id}`, { headers: { authorization: `Bearer ${token}` } }).catch((err: Error) => {
      throw Object.assign(new Error(err.message), { code: (err.cause as { code?: string } | undefined)?.code });
    }));
    const vhost = (async () => {
      // SysError's code: ECONNREFUSED (the killed daemon's socket file) or ENOENT (just removed).
      const fe = await dial('vhost-user', () => VhostUserFrontend.connect(vhostSocket));
      try {
        const data = patternBytes(64 * 1024, 3);
        await fe.write(0, data);
        return Buffer.from(await fe.read(0, data.length)).equals(data);
      } finally {
        fe.close();
      }
    })();
    // Settled below; a failure while the daemon starts is not an unhandled rejection meanwhile.
    for (const p of [overTcp, overUnix, api, vhost]) p.catch(() => {});
    d = await startDaemon(dataDir, { args, replaceArgs: true, env: { STRATA_TEST_RESTORE_DELAY_MS: String(RESTORE_DELAY_MS) } });

    expect((await overTcp).equals(written), 'NBD over TCP reads what was written').toBe(true);
    expect((await overUnix).equals(written), 'NBD over the unix socket reads what was written').toBe(true);
    const answer = await api;
    expect(answer.status, await answer.clone().text()).toBe(200);
    expect((await answer.json()) as { name: string }).toMatchObject({ name: 'default/gap' });
    expect(await vhost, 'the vhost-user front-end reads back what it wrote').toBe(true);
    expect(d.logs()).toMatch(/exports restored started=2 failed=0/);
    expect(d.logs()).not.toMatch(/no such export|no export named/);
  }, 120_000);
});

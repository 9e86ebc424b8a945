/**
 * The folders of the unix sockets the daemon listens on: `strata volume attach --vhost-user
 * /run/strata/vm1.sock` works when /run/strata does not exist yet (the daemon creates it, 0700,
 * and again when it restores the attachment after the folder went away, as /run does at a
 * reboot); an existing folder keeps its mode; a folder that cannot be made is an error naming the
 * folder and the reason, never "not found" (which says the volume is missing). The same for the
 * NBD socket (--nbd-socket) and the data folder, including paths where mkdir answers ENOENT below
 * an existing folder (/proc), on which a recursive mkdir used to spin forever.
 */
import { chmodSync, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { runAsync, STRATA_BIN } from '../support/tools.js';
import { VhostUserFrontend } from '../vhost-user/frontend.js';
import { assertBuilt, startDaemon, useDaemon } from './harness.js';

assertBuilt();

const mode = (p: string) => statSync(p).mode & 0o777;
const isRoot = process.getuid?.() === 0;

describe('socket folders', () => {
  const suite = useDaemon();
  const f = (...parts: string[]) => suite.file(...parts);

  beforeAll(() => {
    for (const v of ['vm1', 'vm2', 'vm3']) suite.d.cliOk(['volume', 'create', v, '4M']);
  });

  it('attach creates a missing socket folder (0700), leaves an existing one as it is, and again at restore', async () => {
    let d = suite.d;
    const socketPath = f('run', 'strata', 'vm1.sock');
    d.cliOk(['volume', 'attach', 'vm1', '--vhost-user', socketPath]);
    expect(mode(f('run'))).toBe(0o700);
    expect(mode(f('run', 'strata'))).toBe(0o700);
    const fe = await VhostUserFrontend.connect(socketPath);
    expect((await fe.read(0, 4096)).every((b) => b === 0)).toBe(true);
    fe.close();

    mkdirSync(f('shared'), { mode: 0o755 });
    chmodSync(f('shared'), 0o755);
    d.cliOk(['volume', 'attach', 'vm2', '--vhost-user', f('shared', 'vm2.sock')]);
    expect(mode(f('shared'))).toBe(0o755);

    // /run is empty after a reboot: the restored attachment makes its folder again.
    await d.stop();
    rmSync(f('run'), { recursive: true, force: true });
    d = suite.d = await startDaemon(f('data'));
    expect(d.logs()).toMatch(/exports restored started=2 failed=0/);
    expect(statSync(socketPath).isSocket()).toBe(true);
    expect(mode(f('run', 'strata'))).toBe(0o700);
  });

  it('a folder that cannot be made: exit 1 naming the folder and the reason, not "not found"', () => {
    const { d } = suite;
    writeFileSync(f('afile'), 'in the way');
    const r = d.cliFails(['volume', 'attach', 'vm3', '--vhost-user', f('afile', 'vm3.sock')], 1, /cannot create the folder/, new RegExp(f('afile')), /a file is in the way/);
    expect(r.stderr).not.toMatch(/NOT_FOUND|volume list/);
    // Below /proc mkdir answers ENOENT although /proc exists.
    const proc = d.cliFails(['volume', 'attach', 'vm3', '--vhost-user', '/proc/strata-test-no-such/vm3.sock'], 1, /cannot create the folder \/proc\/strata-test-no-such/);
    expect(proc.stderr).not.toMatch(/NOT_FOUND|volume list/);
    expect(d.json<unknown[]>(['volume', 'exports']).length).toBe(2);
  });

  it.skipIf(isRoot)('a folder the daemon may not create: exit 1, "permission denied"', () => {
    mkdirSync(f('locked'), { mode: 0o500 });
    chmodSync(f('locked'), 0o500);
    suite.d.cliFails(['volume', 'attach', 'vm3', '--vhost-user', f('locked', 'sub', 'vm3.sock')], 1, /cannot create the folder/, /permission denied/);
  });

  it('--nbd-socket in a missing folder is made; an impossible one (or data folder) fails the start with the folder named', async () => {
    const other = await startDaemon(f('data2'), { args: ['--nbd-socket', f('nbd', 'here', 'nbd.sock')] });
    try {
      expect(existsSync(f('nbd', 'here', 'nbd.sock'))).toBe(true);
      expect(mode(f('nbd', 'here'))).toBe(0o700);
    } finally {
      await other.stop();
    }
    const serve = (args: string[]) => runAsync(process.execPath, [STRATA_BIN, 'serve', '--listen', '127.0.0.1:0', '--nbd-listen', 'off', '--s3-listen', 'off', ...args], { timeoutMs: 20_000 });
    const nbd = await serve(['--data-dir', f('data3'), '--nbd-socket', '/proc/strata-test-no-such/nbd.sock']);
    expect(nbd.code, nbd.stderr).toBe(1);
    expect(nbd.stderr).toMatch(/cannot create the folder \/proc\/strata-test-no-such for the NBD socket/);
    const data = await serve(['--data-dir', '/proc/strata-test-no-such/data']);
    expect(data.code, data.stderr).toBe(1);
    expect(data.stderr).toMatch(/cannot use the data folder \/proc\/strata-test-no-such\/data/);
  });
});

/**
 * What an operator walkthrough found, against a running daemon: output into a pipe whose reader
 * has gone ends quietly (`strata status | head`), BUSY and NOT_FOUND hints name what holds the
 * volume and the list of the kind of thing named, sizes that are not whole bytes or whole sectors
 * are usage errors naming the fix, and serve's refusals name the flag they came from.
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, STRATA_BIN } from '../support/tools.js';
import { assertBuilt, serveFails, useDaemon, type Daemon } from './harness.js';

assertBuilt();

/**
 * Runs `strata ARGS` with stdout on a pipe whose reading end this side closes at once (as `| head`
 * does once it has its lines): every write the command makes meets EPIPE.
 */
function cliIntoClosedPipe(d: Daemon, args: readonly string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  const child = spawn(process.execPath, [STRATA_BIN, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...d.env() } as NodeJS.ProcessEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.destroy();
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stderr })));
}

describe('strata after the operator walkthrough', () => {
  const suite = useDaemon();

  it('stops quietly, status 0, when the reader of its output goes away; an image export says it is incomplete', async () => {
    const { d } = suite;
    d.cliOk(['volume', 'create', 'piped', '8M']);
    d.cliOk(['snap', 'create', 'piped@s']);
    // status writes twice when something is exported (its table follows the summary).
    d.cliOk(['volume', 'export-nbd', 'piped']);
    const commands = [['status'], ['volume', 'list', '--json'], ['volume', '--help'], ['img', '--help']];
    for (const args of commands) {
      const r = await cliIntoClosedPipe(d, args);
      expect({ args, ...r }).toEqual({ args, code: 0, signal: null, stderr: '' });
    }
    // An image stream cut short is a failed export, said in one line (a pipefail script sees it).
    const exported = await cliIntoClosedPipe(d, ['volume', 'export', 'piped@s', '-']);
    expect(exported).toMatchObject({ code: 1, signal: null });
    expect(exported.stderr).toMatch(/^strata: .*stdout was closed before the export ended \(the command reading the output stopped early; the image it got is incomplete\)\n$/);
    // A failure still says what failed (stderr), though its --json object cannot be printed.
    const failed = await cliIntoClosedPipe(d, ['volume', 'info', 'nosuch', '--json']);
    expect(failed).toMatchObject({ code: 3, signal: null });
    expect(failed.stderr).toMatch(/^strata: cannot show volume 'default\/nosuch': .*\[NOT_FOUND\]/);
    expect(failed.stderr.split('\n').filter((line) => line !== '')).toHaveLength(1);
    d.cliOk(['volume', 'unexport-nbd', 'piped']);
  });

  it('BUSY on an exported volume names the command that stops its exports, not the job list', () => {
    const { d } = suite;
    d.cliOk(['volume', 'create', 'vm1', '8M']);
    d.cliOk(['snap', 'create', 'vm1@s1']);
    d.cliOk(['volume', 'export-nbd', 'vm1']);
    const stop = /\[BUSY\] \(stop them with 'strata volume unexport-nbd default\/vm1'\)$/m;
    let r = d.cliFails(['volume', 'delete', 'vm1', '--now'], 4, /is exported; stop its exports to delete it/, stop);
    expect(r.stderr).not.toMatch(/job list/);
    r = d.cliFails(['snap', 'rollback', 'vm1@s1'], 4, /is exported; stop its exports to roll it back/, stop);
    expect(r.stderr).not.toMatch(/job list/);
    d.cliOk(['volume', 'unexport-nbd', 'vm1']);
    // A snapshot's export holds the volume too; vhost-user-blk stops with detach.
    d.cliOk(['volume', 'export-nbd', 'vm1@s1']);
    d.cliFails(['volume', 'delete', 'vm1', '--now', '--force'], 4, /\(stop them with 'strata volume unexport-nbd default\/vm1@s1'\)$/m);
    d.cliOk(['volume', 'attach', 'vm1', '--vhost-user', suite.file('vm1.sock')]);
    d.cliFails(['snap', 'rollback', 'vm1@s1'], 4, /\(stop them with 'strata volume detach default\/vm1'\)$/m);
    d.cliOk(['volume', 'detach', 'vm1']);
    d.cliOk(['volume', 'unexport-nbd', 'vm1@s1']);
    d.cliOk(['snap', 'rollback', 'vm1@s1']);
  });

  it('NOT_FOUND names the list of what was not found: jobs, volumes, snapshots, pools, groups', () => {
    const { d } = suite;
    const r = d.cliFails(['job', 'info', 'nosuch'], 3, /job 'nosuch' does not exist \[NOT_FOUND\] \(check the id; 'strata job list' lists the jobs\)$/m);
    expect(r.stderr).not.toMatch(/pool list|volume list|snap list/);
    d.cliFails(['volume', 'info', 'nosuch'], 3, /\(check the name; 'strata volume list default' lists the pool's volumes\)$/m);
    d.cliFails(['snap', 'info', 'vm1@nosuch'], 3, /\(check the name; 'strata snap list default\/vm1' lists the volume's snapshots\)$/m);
    d.cliFails(['volume', 'info', 'nopool/v'], 3, /pool 'nopool' does not exist \[NOT_FOUND\] \(check the name; 'strata pool list' lists the pools\)$/m);
    d.cliFails(['group', 'info', 'nog'], 3, /group 'nog' does not exist \[NOT_FOUND\] \(check the name; 'strata group list' lists the groups\)$/m);
  });

  it('sizes: a fraction that is not whole bytes and a size that is not whole sectors are usage errors naming the fix', () => {
    const { d } = suite;
    d.cliFails(['volume', 'create', 'x', '1.3G'], 2, /size '1\.3G' is 1395864371\.2 bytes, not a whole number \(give a whole number of bytes or a unit that makes one, e\.g\. 1331M\)$/m);
    d.cliFails(['volume', 'create', 'x', '1000'], 2, /size '1000' is not a multiple of 512 bytes \(a volume is made of 512-byte sectors: give e\.g\. 512 or 1k\)$/m);
    d.cliFails(['volume', 'create', 'x', '0'], 2, /the size must be more than 0/);
    expect(d.json(['volume', 'create', 'x', '1.5G']).provisionedBytes).toBe(1.5 * 2 ** 30);
    d.cliFails(['volume', 'resize', 'x', '+1.3G'], 2, /is 1395864371\.2 bytes, not a whole number/);
  });

  it('pool create: dedup-only flags agree in number', () => {
    const { d } = suite;
    d.cliFails(['pool', 'create', 'p3', '--tier', `file://${suite.file('cold')}`], 2, /pool create: --tier applies to dedup pools only \(add --dedup\)$/m);
    d.cliFails(['pool', 'create', 'p3', '--hash', 'xxh128', '--tier', `file://${suite.file('cold')}`], 2, /--hash, --tier apply to dedup pools only/);
  });

  it('serve names the flag a bad address came from', async () => {
    for (const flag of ['--listen', '--nbd-listen', '--s3-listen']) {
      const r = await serveFails(['--data-dir', suite.file(`bad${flag}`), flag, '127.0.0.1:17460x']);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`serve: ${flag}: '127.0.0.1:17460x' has no valid port (0..65535)`);
    }
  });
});

/**
 * What a new operator meets (issue 10), against a running daemon: refusals that name the flag of
 * the interface used (CLI flag, REST field) with sizes as the CLI prints them, exit statuses as
 * documented, size arguments, --json errors, and jobs (watch rate, Ctrl-C during an import).
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, STRATA_BIN, requireTool, strata } from '../support/tools.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { assertBuilt, diffStream, patternBytes, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const V = '/v1/pools/default/volumes';

interface ErrorJson {
  error: { code: string | null; message: string; hint: string | null; exitCode: number };
}

describe.skipIf(!requireTool('qemu-img'))('strata as a new operator meets it', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    d = await startDaemon(path.join(tmp.path, 'data'));
  });
  afterAll(async () => {
    if (d) expect((await d.stop()).code).toBe(0);
    tmp?.cleanup();
  });

  async function restError(res: Response): Promise<{ status: number; error: { code: string; message: string; hint?: string; fix?: Record<string, unknown> } }> {
    return { status: res.status, ...((await res.json()) as { error: { code: string; message: string; hint?: string; fix?: Record<string, unknown> } }) };
  }

  it('a quota refusal gives the pool total and what the change adds, in GiB, and how to raise the quota', async () => {
    d.cliOk(['pool', 'create', 'q', '--quota', '2G']);
    d.cliOk(['volume', 'create', 'q/v', '1.5G']);
    const r = d.cliFails(['volume', 'resize', 'q/v', '3G'], 1, /pool 'q' has a quota of 2 GiB and 1\.5 GiB is provisioned; 1\.5 GiB more \(growing 'q\/v' to 3 GiB\) does not fit \[LIMIT_EXCEEDED\]/);
    expect(r.stderr).toMatch(/\(raise the quota with 'strata pool quota q SIZE', or shrink or delete volumes\)$/m);
    expect(r.stderr).not.toMatch(/\d{6,}/);
    d.cliFails(['volume', 'create', 'q/w', '1G'], 1, /1\.5 GiB is provisioned; 1 GiB more \(the new volume 'q\/w'\) does not fit/);
    const rest = await restError(await d.api('PATCH', '/v1/pools/q/volumes/v', { body: { sizeBytes: 3 * 2 ** 30 } }));
    expect(rest).toMatchObject({ status: 422, error: { code: 'LIMIT_EXCEEDED', hint: 'raise the quota with PATCH /v1/pools/q {"quotaBytes": N}, or shrink or delete volumes' } });
    expect(rest.error.fix).toEqual({ operation: 'setPoolQuota', pool: 'q', text: 'raise the quota with {}, or shrink or delete volumes' });
  });

  it('each refusal names the fix in the terms of the interface used: CLI flags and commands, REST fields and routes', async () => {
    d.cliOk(['volume', 'create', 'vm', '1G']);
    // Shrink: --shrink for the CLI, "allowShrink": true for REST.
    let r = d.cliFails(['volume', 'resize', 'vm', '512M'], 1, /shrinking 'default\/vm' from 1 GiB to 512 MiB loses the data past the new end \[INVALID_ARGUMENT\] \(pass --shrink to shrink it anyway\)/);
    expect(r.stderr).not.toMatch(/allowShrink/);
    let rest = await restError(await d.api('PATCH', `${V}/vm`, { body: { sizeBytes: 512 << 20 } }));
    expect(rest).toMatchObject({ status: 400, error: { message: "shrinking 'default/vm' from 1 GiB to 512 MiB loses the data past the new end", hint: 'pass "allowShrink": true to shrink it anyway', fix: { option: 'allowShrink' } } });
    // Delete with snapshots: --force / ?force=true.
    d.cliOk(['snap', 'create', 'vm@s1']);
    r = d.cliFails(['volume', 'delete', 'vm', '--now'], 4, /volume 'default\/vm' has 1 snapshot \[BUSY\] \(delete it first, or pass --force to delete it with the volume\)/);
    rest = await restError(await d.api('DELETE', `${V}/vm`));
    expect(rest.error.hint).toBe('delete it first, or pass ?force=true to delete it with the volume');
    // Protected snapshot: strata snap unprotect / PATCH ... {"protected": false}.
    d.cliOk(['snap', 'protect', 'vm@s1']);
    d.cliFails(['snap', 'delete', 'vm@s1'], 4, /snapshot 'default\/vm@s1' is protected \[BUSY\] \(unprotect it first with 'strata snap unprotect default\/vm@s1'\)/);
    rest = await restError(await d.api('DELETE', `${V}/vm/snapshots/s1`));
    expect(rest.error.hint).toBe('unprotect it first with PATCH /v1/pools/default/volumes/vm/snapshots/s1 {"protected": false}');
    // Snapshot limit: strata snap limit / {"snapshotLimit": N}.
    d.cliOk(['snap', 'limit', 'vm', '1']);
    d.cliFails(['snap', 'create', 'vm@s2'], 1, /has 1 snapshot, its limit \[LIMIT_EXCEEDED\] \(delete one, or raise the limit with 'strata snap limit default\/vm N'\)/);
    d.cliOk(['snap', 'limit', 'vm', 'none']);
    // An empty import: --size SIZE / ?sizeBytes=N.
    d.cliFails(['volume', 'import', '-', 'empty'], 1, /the import stream is empty \[INVALID_ARGUMENT\] \(give the size with --size SIZE to create an empty volume\)/);
    rest = await restError(await d.api('PUT', `${V}/empty/content`, { raw: '', headers: { 'content-type': 'application/octet-stream' } }));
    expect(rest.error.hint).toBe('give the size with ?sizeBytes=N to create an empty volume');
  });

  it('exit statuses: usage 2 with the usage text, conflicts 4 (unprotected clone, finished job, not a clone), --version', () => {
    const none = strata([]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^Usage: strata <command>/);
    expect(none.stderr).toMatch(/^strata: missing command \(see 'strata --help'\)$/m);
    const unknown = strata(['frob']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^strata: unknown command 'frob'/);
    // Global options given before the command, as git and aws take them: the hint is the command
    // with them moved where strata takes them.
    const early = strata(['--json', 'pool', 'list']);
    expect(early.code).toBe(2);
    expect(early.stderr).toMatch(/^strata: unknown command '--json' \(options go after the command: 'strata pool list --json'\)$/m);
    expect(strata(['--url', 'http://127.0.0.1:1', 'status']).stderr).toMatch(/\(options go after the command: 'strata status --url http:\/\/127\.0\.0\.1:1'\)$/m);
    expect(strata(['pool', '--json', 'list']).stderr).toMatch(/^strata: pool: unknown subcommand '--json' \(options go after the subcommand: 'strata pool list --json'\)$/m);
    const version = (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    for (const flag of ['--version', '-V']) {
      const r = strata([flag]);
      expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 0, stdout: `strata ${version}\n` });
    }

    d.cliOk(['volume', 'create', 'base', '64M']);
    d.cliOk(['snap', 'create', 'base@gold']);
    d.cliFails(['snap', 'clone', 'base@gold', 'c1'], 4, /snapshot 'default\/base@gold' is not protected.*\[BUSY\] \(protect it first with 'strata snap protect default\/base@gold'\)/);
    d.cliFails(['volume', 'flatten', 'base'], 4, /is not a clone; there is nothing to flatten \[BUSY\]/);
    d.cliOk(['snap', 'create', 'base@second']);
    d.cliFails(['snap', 'limit', 'base', '1'], 4, /already has 2 snapshots, more than the limit 1/);

    const copy = d.json(['volume', 'copy', 'base', 'base2', '--no-wait']);
    d.cliOk(['job', 'watch', copy.id]);
    d.cliFails(['job', 'cancel', copy.id], 4, new RegExp(`job ${copy.id} already succeeded; nothing to cancel \\[BUSY\\] \\('strata job info ${copy.id}' shows how it ended\\)`));
  });

  it('sizes: past the safe integers says the volume size limit, a negative size says so, counts agree in number', () => {
    d.cliFails(['volume', 'create', 'x', '8P'], 2, /size '8P' is too large \(the largest volume is 1 PiB\)/);
    d.cliFails(['volume', 'create', 'x', '2P'], 2, /size '2P' is too large \(the largest volume is 1 PiB\)/);
    d.cliFails(['volume', 'create', 'x', '-5G'], 2, /size '-5G' is negative; it must be positive/);
    d.cliFails(['volume', 'import', '-', 'x', '--size', '-1M'], 2, /size '-1M' is negative/);
    d.cliFails(['pool', 'quota', 'q', '16P'], 2, /quota '16P' is too large/);
    // A relative shrink is a size, not an option.
    d.cliOk(['volume', 'create', 'rel', '1G']);
    d.cliFails(['volume', 'resize', 'rel', '-256M'], 1, /pass --shrink/);
    expect(d.cliOk(['volume', 'resize', 'rel', '-256M', '--shrink']).stdout).toBe("Volume 'default/rel' resized to 768 MiB.\n");
    const diff = diffStream(768 << 20, null, 'one', [{ kind: 'd', offset: 0, data: Buffer.alloc(4096, 1) }]);
    expect(d.cliOk(['volume', 'import-diff', '-', 'rel'], { input: diff }).stdout).toMatch(/\(1 snapshot now\)\.\n$/);
  });

  it('with --json, an error is also a JSON object on stdout, usage errors too', () => {
    let r = d.cliFails(['volume', 'info', 'nope', '--json'], 3, /volume 'default\/nope' does not exist \[NOT_FOUND\]/);
    expect(JSON.parse(r.stdout) as ErrorJson).toEqual({
      error: { code: 'NOT_FOUND', message: "cannot show volume 'default/nope': volume 'default/nope' does not exist", hint: expect.stringContaining('strata volume list'), exitCode: 3 },
    });
    r = d.cliFails(['volume', 'create', 'x', '--json'], 2, /missing SIZE/);
    expect(JSON.parse(r.stdout) as ErrorJson).toEqual({ error: { code: 'USAGE', message: 'volume create: missing SIZE', hint: "see 'strata volume create --help'", exitCode: 2 } });
    d.cliOk(['volume', 'create', 'js', '1G']);
    r = d.cliFails(['volume', 'resize', 'js', '64M', '--json'], 1, /pass --shrink/);
    expect((JSON.parse(r.stdout) as ErrorJson).error).toMatchObject({ code: 'INVALID_ARGUMENT', hint: 'pass --shrink to shrink it anyway', exitCode: 1 });
    r = d.cliFails(['status', '--json', '--url', 'http://127.0.0.1:1'], 1, /not reachable/);
    expect((JSON.parse(r.stdout) as ErrorJson).error).toMatchObject({ code: 'UNREACHABLE', exitCode: 1 });
    const top = strata(['frob', '--json']);
    expect(top.code).toBe(2);
    expect((JSON.parse(top.stdout) as ErrorJson).error).toMatchObject({ code: 'USAGE', exitCode: 2 });
  });

  it('job watch -p shows no rate before it has measured one (a finished job is not N GiB/s)', () => {
    d.cliOk(['volume', 'create', 'watched', '64M']);
    d.cliOk(['volume', 'import-diff', '-', 'watched'], { input: diffStream(64 << 20, null, null, [{ kind: 'd', offset: 0, data: patternBytes(32 << 20, 9) }]) });
    const copy = d.json(['volume', 'copy', 'watched', 'watched2', '--no-wait']);
    d.cliOk(['job', 'watch', copy.id]);
    const r = d.cliOk(['job', 'watch', copy.id, '-p']);
    expect(r.stderr).toMatch(/copy \[#+\] 100%  32 MiB \/ 32 MiB\x1b\[K\n$/);
    expect(r.stderr).not.toMatch(/\/s/);
  });

  it('Ctrl-C during an import ends the progress line and exits 130; the job ends cancelled because the client disconnected', async () => {
    const child = spawn(process.execPath, [STRATA_BIN, 'volume', 'import', '-', 'interrupted', '-p'], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...d.env() } as NodeJS.ProcessEnv,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    // An endless stdin, paced by back-pressure, until the CLI goes away.
    const chunk = patternBytes(1 << 20, 11);
    const input = Readable.from((function* () {
      for (;;) yield chunk;
    })());
    child.stdin.on('error', () => input.destroy());
    input.pipe(child.stdin);
    // Interrupt once the daemon's import job has received data and the bar is showing.
    let job: { id: string; state: string; doneBytes: number } | undefined;
    const deadline = Date.now() + 60_000;
    while (job === undefined || job.doneBytes === 0 || !stderr.includes('importing')) {
      if (Date.now() > deadline) throw new Error(`the import did not start: ${stderr}`);
      const jobs = await d.apiJson<Array<{ id: string; kind: string; target: string; state: string; doneBytes: number }>>('GET', '/v1/jobs');
      job = jobs.find((j) => j.kind === 'import' && j.target === 'default/interrupted');
      await sleep(20);
    }
    child.kill('SIGINT');
    expect(await exited).toEqual({ code: 130, signal: null });
    input.destroy();
    expect(stderr).toMatch(/importing \d.*\n$/);

    // The daemon sees the client go: the job ends cancelled, saying why; nothing is left behind.
    const watched = d.cli(['job', 'watch', job.id]);
    expect(watched.code).toBe(4);
    expect(watched.stderr).toMatch(/was cancelled: the client disconnected before the upload ended \[CANCELLED\]/);
    const info = d.cliOk(['job', 'info', job.id]).stdout;
    expect(info).toMatch(/^state +cancelled$/m);
    expect(info).toMatch(/^progress +\d+(\.\d+)? [KMG]iB$/m);
    expect(info).toMatch(/^error +the client disconnected before the upload ended \[CANCELLED\]$/m);
    d.cliFails(['volume', 'info', 'interrupted'], 3, /NOT_FOUND/);
  });
});

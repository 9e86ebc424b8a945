/**
 * `strata serve` as an operator runs it: first start in an empty folder, the token and the
 * default pool, the data-folder lock, configuration precedence (flags > env > file > defaults),
 * start-up failures with clear messages, log formats, and clean shutdown on SIGTERM and SIGINT
 * (also while a job runs) with exit status 0.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { STRATA_BIN, requireTool } from '../support/tools.js';
import { shmTempDir } from '../support/tmp.js';
import { assertBuilt, chainFiles, expectCleanCheck, patternBytes, poolFiles, serveFails, startDaemon, writeRawImage } from './harness.js';

assertBuilt();

describe.skipIf(!requireTool('qemu-img'))('strata serve', () => {
  it('first start: creates ./strata-data, a 0600 token, the default pool and a lock; SIGTERM exits 0 and a restart keeps everything', async () => {
    const cwd = shmTempDir();
    const dataDir = path.join(cwd, 'strata-data');
    // No --data-dir: the default ./strata-data relative to the working folder.
    const d = await startDaemon(dataDir, { replaceArgs: true, args: ['--listen', '127.0.0.1:0'], cwd });
    expect(existsSync(path.join(dataDir, 'catalog'))).toBe(true);
    const tokenStat = statSync(path.join(dataDir, 'token'));
    expect(tokenStat.mode & 0o777).toBe(0o600);
    expect(d.token).toMatch(/^[0-9a-f]{64}$/);
    expect(readFileSync(path.join(dataDir, 'strata.pid'), 'utf8').trim()).toBe(String(d.proc.pid));
    expect(d.json(['pool', 'list']).map((p: { name: string }) => p.name)).toEqual(['default']);
    const status = d.json(['status']);
    expect(status).toMatchObject({ status: 'ok', dataDir, pid: d.proc.pid, pools: ['default'], volumes: 0, jobsRunning: 0 });
    expect(d.cliOk(['status']).stdout).toMatch(/daemon\s+http:\/\/127\.0\.0\.1:\d+ \(ok\)/);
    d.cliOk(['volume', 'create', 'keep', '1M']);

    // A second daemon on the same folder is refused at once (exit 4) and names the first's pid.
    const second = await serveFails(['--data-dir', dataDir, '--listen', '127.0.0.1:0']);
    expect(second.code).toBe(4);
    expect(second.stderr).toMatch(new RegExp(`another strata daemon \\(pid ${d.proc.pid}\\) is using the data folder`));
    expect(d.running).toBe(true);

    const token = d.token;
    const exit = await d.stop('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(d.logs()).toMatch(/shutting down reason=SIGTERM/);
    expect(d.logs()).toMatch(/INFO +stopped/);
    expect(existsSync(path.join(dataDir, 'strata.pid'))).toBe(false);
    d.cliFails(['status'], 1, /daemon not reachable at http:\/\/127\.0\.0\.1:\d+: connection refused \(start it with 'strata serve'/);

    const again = await startDaemon(dataDir, { replaceArgs: true, args: ['--listen', '127.0.0.1:0'], cwd });
    expect(again.token).toBe(token);
    expect(again.json(['volume', 'list']).map((v: { name: string }) => v.name)).toEqual(['keep']);
    expect(again.logs()).not.toMatch(/generated the API token[\s\S]*generated the API token/);
    expect((await again.stop('SIGINT')).code).toBe(0);
  });

  it('configuration: flags beat the environment, which beats the config file, which beats the defaults', async () => {
    const dir = shmTempDir();
    const dataDir = path.join(dir, 'data');
    mkdirSync(dataDir);
    // <data>/strata.json is read by default; its listen address is unusable on purpose.
    writeFileSync(path.join(dataDir, 'strata.json'), JSON.stringify({ listen: '127.0.0.1:99999', logFormat: 'json', logLevel: 'debug' }));
    const fromFile = await serveFails(['--data-dir', dataDir]);
    expect(fromFile.code).toBe(2);
    expect(fromFile.stderr).toMatch(/config file .*strata\.json, key 'listen': '127\.0\.0\.1:99999' has no valid port/);

    // env beats the file for listen; the file's logFormat json and logLevel debug still apply.
    const a = await startDaemon(dataDir, { replaceArgs: true, args: ['--data-dir', dataDir], env: { STRATA_LISTEN: '127.0.0.1:0' } });
    await a.api('GET', '/v1/pools', { token: 'wrong' }); // logged at debug level
    const aLog = a.logs();
    for (const line of aLog.split('\n').filter((l) => l.trim() !== '')) expect(() => JSON.parse(line), line).not.toThrow();
    expect(aLog).toMatch(/"msg":"listening"/);
    expect(aLog).toMatch(/"level":20,.*"msg":"request refused"/);
    expect((await a.stop()).code).toBe(0);

    // env beats the file for the log format.
    const b = await startDaemon(dataDir, { replaceArgs: true, args: ['--data-dir', dataDir], env: { STRATA_LISTEN: '127.0.0.1:0', STRATA_LOG_FORMAT: 'text' } });
    const bLog = b.logs().slice(aLog.length);
    expect(bLog).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z INFO +listening url=http/m);
    expect((await b.stop()).code).toBe(0);

    // flags beat env: the env's listen host does not exist, its text format and debug level lose.
    const before = b.logs().length;
    const c = await startDaemon(dataDir, {
      replaceArgs: true,
      args: ['--data-dir', dataDir, '--listen', '127.0.0.1:0', '--log-format', 'json', '--log-level', 'info'],
      env: { STRATA_LISTEN: 'no-such-host.invalid:0', STRATA_LOG_FORMAT: 'text', STRATA_LOG_LEVEL: 'debug' },
    });
    await c.api('GET', '/v1/pools', { token: 'wrong' });
    const cLog = c.logs().slice(before);
    for (const line of cLog.split('\n').filter((l) => l.trim() !== '')) expect(() => JSON.parse(line), line).not.toThrow();
    expect(cLog).not.toMatch(/"level":20/);
    expect((await c.stop()).code).toBe(0);

    // STRATA_DATA_DIR and --config with a relative dataDir (relative to the file).
    const confDir = path.join(dir, 'etc');
    mkdirSync(confDir);
    writeFileSync(path.join(confDir, 'strata.json'), JSON.stringify({ dataDir: '../viaconfig', listen: '127.0.0.1:0' }));
    const viaConfig = await startDaemon(path.join(dir, 'viaconfig'), { replaceArgs: true, args: ['--config', path.join(confDir, 'strata.json')] });
    expect(existsSync(path.join(dir, 'viaconfig', 'token'))).toBe(true);
    expect((await viaConfig.stop()).code).toBe(0);
    const viaEnv = await startDaemon(path.join(dir, 'viaenv'), { replaceArgs: true, args: ['--listen', '127.0.0.1:0'], env: { STRATA_DATA_DIR: path.join(dir, 'viaenv') } });
    expect(existsSync(path.join(dir, 'viaenv', 'token'))).toBe(true);
    expect((await viaEnv.stop()).code).toBe(0);
  });

  // Bug: the signal handlers went in only once startDaemon returned, after the daemon listened: a
  // SIGTERM sent as soon as it was up (the configuration test under load) killed it (no exit code).
  it('SIGTERM during start-up: the daemon finishes starting, shuts down cleanly and exits 0', async () => {
    const dataDir = path.join(shmTempDir(), 'data');
    const env = { ...process.env, STRATA_S3_LISTEN: '127.0.0.1:0', STRATA_NBD_LISTEN: '127.0.0.1:0' };
    const child = spawn(process.execPath, [STRATA_BIN, 'serve', '--data-dir', dataDir, '--listen', '127.0.0.1:0'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let signalled = false;
    const onOutput = (chunk: Buffer) => {
      output += chunk.toString();
      // The first log line comes from inside start-up (the token, recovery), before it listens.
      if (!signalled && output.includes('\n')) {
        signalled = true;
        child.kill('SIGTERM');
      }
    };
    child.stdout.on('data', onOutput);
    child.stderr.on('data', onOutput);
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    expect(signalled, output).toBe(true);
    expect(exit, output).toEqual({ code: 0, signal: null });
    expect(output).toMatch(/SIGTERM during start-up: stopping once started/);
    expect(existsSync(path.join(dataDir, 'token'))).toBe(true);
  });

  it('start-up failures say what is wrong: bad config, bad flags, address in use', async () => {
    const dir = shmTempDir();
    const cases: Array<[string[], RegExp]> = [
      [['--log-format', 'xml'], /log format must be 'text' or 'json', not 'xml'/],
      [['--log-level', 'loud'], /log level must be one of fatal, error, warn, info, debug, trace, silent/],
      [['--listen', 'nonsense'], /'nonsense' is not host:port/],
      [['--config', path.join(dir, 'missing.json')], /cannot read the config file/],
      [['extra'], /unexpected argument 'extra'/],
      [['--bogus'], /unknown option '--bogus'/],
    ];
    for (const [args, message] of cases) {
      const r = await serveFails(['--data-dir', path.join(dir, 'd'), ...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(message);
    }
    writeFileSync(path.join(dir, 'bad.json'), '{"listen": ');
    let r = await serveFails(['--config', path.join(dir, 'bad.json')]);
    expect([r.code, r.stderr]).toEqual([2, expect.stringMatching(/bad\.json is not valid JSON/)]);
    writeFileSync(path.join(dir, 'unknown.json'), '{"colour": "blue"}');
    r = await serveFails(['--config', path.join(dir, 'unknown.json')]);
    expect([r.code, r.stderr]).toEqual([2, expect.stringMatching(/unknown key 'colour'/)]);

    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      r = await serveFails(['--data-dir', path.join(dir, 'd'), '--listen', `127.0.0.1:${port}`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use`));
      // The failed start released its lock: a daemon can start on the folder now.
      const ok = await startDaemon(path.join(dir, 'd'));
      expect((await ok.stop()).code).toBe(0);
    } finally {
      blocker.close();
    }
  });

  it('SIGTERM during a flatten job: the daemon exits 0, and after a restart the clone is whole and nothing is orphaned', async () => {
    const dir = shmTempDir();
    const dataDir = path.join(dir, 'data');
    mkdirSync(dataDir);
    writeFileSync(path.join(dataDir, 'strata.json'), JSON.stringify({ shutdownGraceMs: 300 }));
    const d = await startDaemon(dataDir);
    const size = 64 * 1024 * 1024;
    const image = writeRawImage(path.join(dir, 'base.raw'), size, [
      { offset: 0, data: patternBytes(8 << 20, 1) },
      { offset: 40 << 20, data: patternBytes(16 << 20, 2) },
    ]);
    d.cliOk(['volume', 'import', path.join(dir, 'base.raw'), 'base']);
    d.cliOk(['snap', 'create', 'base@gold']);
    d.cliOk(['snap', 'protect', 'base@gold']);
    d.cliOk(['snap', 'clone', 'base@gold', 'vm']);
    const job = d.json(['volume', 'flatten', 'vm', '--no-wait']);
    expect(job).toMatchObject({ kind: 'flatten', target: 'default/vm' });
    const exit = await d.stop('SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(d.logs()).toMatch(/stopped/);

    const again = await startDaemon(dataDir);
    const vm = again.json(['volume', 'info', 'vm']);
    const out = path.join(dir, 'vm.raw');
    again.cliOk(['volume', 'export', 'vm', out]);
    expect(readFileSync(out).equals(image)).toBe(true);
    // Every file in the pool is in some volume's chain, and every chain file checks clean.
    const referenced = new Set<string>();
    for (const v of again.json(['volume', 'list'])) for (const f of chainFiles(v.location)) referenced.add(f);
    expect(new Set(poolFiles(dataDir, 'default'))).toEqual(referenced);
    for (const f of referenced) expectCleanCheck(f);
    expect(vm.provisionedBytes).toBe(size);
    expect((await again.stop()).code).toBe(0);
  });
});

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { expectSuccess, findTool, REPO_ROOT, requireTool, run, runAsync, strata } from '../support/tools.js';
import { makeTempDir, shmBase, shmTempDir, tempDir, useTempDir } from '../support/tmp.js';

describe('test/support/tools', () => {
  const savedCi = process.env.CI;
  afterEach(() => {
    if (savedCi === undefined) delete process.env.CI;
    else process.env.CI = savedCi;
  });

  it('finds tools on PATH', () => {
    expect(findTool('sh')).toMatch(/\/sh$/);
    expect(findTool('no-such-tool-strata-xyz')).toBeUndefined();
    expect(requireTool('sh')).toBe(true);
  });

  it('requireTool: a missing tool skips locally and throws under CI=true', () => {
    delete process.env.CI;
    expect(requireTool('no-such-tool-strata-xyz')).toBe(false);
    process.env.CI = 'true';
    expect(() => requireTool('sh', 'no-such-tool-strata-xyz')).toThrow(/no-such-tool-strata-xyz.*CI=true/);
  });

  it('run and runAsync capture status and output', async () => {
    const r = run('sh', ['-c', 'echo out; echo err >&2; exit 3']);
    expect(r).toEqual({ code: 3, signal: null, stdout: 'out\n', stderr: 'err\n' });
    const a = await runAsync('sh', ['-c', 'cat; echo "$X"'], { input: 'in\n', env: { X: 'x' } });
    expect(a).toEqual({ code: 0, signal: null, stdout: 'in\nx\n', stderr: '' });
    expect(run('pwd', [], { cwd: '/' }).stdout).toBe('/\n');
    expect(() => expectSuccess(r, 'sh')).toThrow(/sh failed \(exit status 3\)[\s\S]*err/);
    expect(() => run('no-such-tool-strata-xyz')).toThrow(/could not run/);
    await expect(runAsync('no-such-tool-strata-xyz')).rejects.toThrow(/could not run/);
    const killed = await runAsync('sleep', ['10'], { timeoutMs: 100 });
    expect(killed.signal).toBe('SIGKILL');
  });

  it('strata runs bin/strata.js from the repository root', () => {
    expect(fs.existsSync(path.join(REPO_ROOT, 'package.json'))).toBe(true);
    const r = strata(['--help']);
    expect(r.code).not.toBeNull();
    if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js'))) {
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/not built/);
    }
  });
});

describe('test/support/tmp', () => {
  let fromTest: string | undefined;
  let fromShm: string | undefined;

  it('tempDir and shmTempDir give fresh directories', () => {
    fromTest = tempDir();
    fromShm = shmTempDir();
    expect(fs.statSync(fromTest).isDirectory()).toBe(true);
    expect(fromTest.startsWith(os.tmpdir())).toBe(true);
    expect(fromShm.startsWith(shmBase())).toBe(true);
    fs.writeFileSync(path.join(fromTest, 'x'), 'x');
  });

  it('removed them when the previous test finished', () => {
    expect(fromTest && fs.existsSync(fromTest)).toBe(false);
    expect(fromShm && fs.existsSync(fromShm)).toBe(false);
  });

  it('makeTempDir cleans up on request', () => {
    const t = makeTempDir();
    fs.mkdirSync(path.join(t.path, 'a', 'b'), { recursive: true });
    t.cleanup();
    expect(fs.existsSync(t.path)).toBe(false);
  });

  describe('useTempDir', () => {
    const tmp = useTempDir({ shm: true });
    let first: string | undefined;
    it('gives each test its own directory', () => {
      first = tmp.path;
      expect(fs.existsSync(first)).toBe(true);
    });
    it('and removes the previous one', () => {
      expect(tmp.path).not.toBe(first);
      expect(fs.existsSync(first!)).toBe(false);
    });
  });
});

/** loadConfig: a refused setting names where it came from as the operator wrote it (the flag, the variable, the file's key). */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, type ConfigFlags } from '../../src/daemon/config.js';
import { tempDir } from '../support/tmp.js';

function refusal(flags: ConfigFlags, env: NodeJS.ProcessEnv, dir: string): string {
  try {
    loadConfig({ dataDir: dir, ...flags }, env, dir);
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('loadConfig accepted the setting');
}

describe('daemon config: where a bad setting came from', () => {
  it('names the flag itself, not "flag"', () => {
    const dir = tempDir();
    expect(refusal({ listen: '127.0.0.1:17460x' }, {}, dir)).toBe("--listen: '127.0.0.1:17460x' has no valid port (0..65535)");
    expect(refusal({ nbdListen: '127.0.0.1:17460x' }, {}, dir)).toBe("--nbd-listen: '127.0.0.1:17460x' has no valid port (0..65535)");
    expect(refusal({ s3Listen: '127.0.0.1:17460x' }, {}, dir)).toBe("--s3-listen: '127.0.0.1:17460x' has no valid port (0..65535)");
    expect(refusal({ logLevel: 'loud' }, {}, dir)).toMatch(/^--log-level: log level must be one of/);
    expect(refusal({ tierCoolingIntervalMs: '5' }, {}, dir)).toMatch(/^--tier-cooling-interval-ms: the tier cooling interval must be/);
  });

  it('names the environment variable, and the config file with its key', () => {
    const dir = tempDir();
    expect(refusal({}, { STRATA_NBD_LISTEN: 'nowhere' }, dir)).toBe("STRATA_NBD_LISTEN: 'nowhere' is not host:port (e.g. 127.0.0.1:7460)");
    const file = path.join(dir, 'strata.json');
    writeFileSync(file, JSON.stringify({ s3Listen: '127.0.0.1:70000' }));
    expect(refusal({}, {}, dir)).toBe(`config file ${file}, key 's3Listen': '127.0.0.1:70000' has no valid port (0..65535)`);
    writeFileSync(file, JSON.stringify({ sealPolicyIntervalMs: 1 }));
    expect(refusal({}, {}, dir)).toMatch(/^config file .*strata\.json, key 'sealPolicyIntervalMs': the seal policy interval must be/);
  });

  it('resolves paths from a flag or variable against the working folder, from the file against its folder', () => {
    const dir = tempDir();
    const cwd = path.join(dir, 'work');
    writeFileSync(path.join(dir, 'strata.json'), JSON.stringify({ nbdSocket: 'file.sock' }));
    const fromFile = loadConfig({ dataDir: dir }, {}, cwd);
    expect(fromFile.nbdSocketPath).toBe(path.join(dir, 'file.sock'));
    expect(loadConfig({ dataDir: dir, nbdSocket: 'flag.sock' }, {}, cwd).nbdSocketPath).toBe(path.join(cwd, 'flag.sock'));
    expect(loadConfig({ dataDir: dir }, { STRATA_NBD_SOCKET: 'env.sock' }, cwd).nbdSocketPath).toBe(path.join(cwd, 'env.sock'));
  });
});

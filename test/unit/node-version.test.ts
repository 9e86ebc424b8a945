/**
 * The supported Node.js versions are stated once, in package.json's engines.node, and everything
 * else agrees with it: bin/strata.js's runtime check (which reads it), @types/node, .ci/run (which
 * runs the suite on Node.js 24) and the README's Set-up. On an older Node.js, bin/strata.js stops
 * with a message naming the fix.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { minimumNodeVersion, nodeVersionProblem, parseNodeVersion, atLeast } from '../../bin/node-version.js';
import { REPO_ROOT, STRATA_BIN } from '../support/tools.js';

const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
  engines: { node: string };
  devDependencies: Record<string, string>;
};
const engines = pkg.engines.node;
const TOO_OLD = /strata: Node\.js v20\.19\.0 is too old: Strata needs Node\.js >=22\.12 \(the 22 or 24 LTS line\)[\s\S]*npm install --prefix "\$HOME\/\.cache\/strata-node24" --no-save node@24/;

describe('supported Node.js versions', () => {
  it('engines.node is >=22.12, and the runtime check accepts exactly what it allows', () => {
    expect(engines).toBe('>=22.12');
    expect(minimumNodeVersion(engines)).toEqual([22, 12, 0]);
    for (const old of ['v18.20.4', 'v20.19.0', 'v20.20.2', 'v22.0.0', 'v22.11.9']) expect(nodeVersionProblem(old, engines), old).toMatch(/is too old/);
    for (const ok of ['v22.12.0', 'v22.20.1', 'v23.0.0', 'v24.0.0', 'v24.21.0', 'v26.1.0']) expect(nodeVersionProblem(ok, engines), ok).toBeUndefined();
    // The suite itself runs on a supported version.
    expect(nodeVersionProblem(process.version, engines)).toBeUndefined();
    expect(() => minimumNodeVersion('^22 || ^24')).toThrow(/engines\.node must read ">=MAJOR\.MINOR"/);
  });

  it('@types/node, .ci/run and the README agree with engines.node', () => {
    const [minMajor] = minimumNodeVersion(engines);
    const typesMajor = Number(/\d+/.exec(pkg.devDependencies['@types/node'] ?? '')?.[0]);
    expect(typesMajor).toBeGreaterThanOrEqual(minMajor);
    // Types no newer than the oldest supported line: an API only Node.js 24 has fails to compile.
    expect(typesMajor).toBe(minMajor);
    const ci = readFileSync(path.join(REPO_ROOT, '.ci', 'run'), 'utf8');
    expect(ci).toMatch(/npm install --prefix "\$NODE24_PREFIX" --no-save .*node@24/);
    expect(ci).toMatch(/export PATH="\$NODE24_PREFIX\/node_modules\/\.bin:\$PATH"/);
    expect(ci).toMatch(/node \$\(node --version\)/);
    const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const setUp = readme.slice(readme.indexOf('## Set-up'), readme.indexOf('## Quick start'));
    expect(setUp).toMatch(/Node\.js 22\.12 or newer/);
  });

  it('bin/strata.js on an older Node.js prints what to install and exits 1', () => {
    // The running Node.js, told by a preloaded module that it is v20.19.0.
    const r = spawnSync(process.execPath, ['--import', 'data:text/javascript,Object.defineProperty(process, "version", { value: "v20.19.0" });', STRATA_BIN, '--help'], {
      encoding: 'utf8',
    });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(TOO_OLD);
    // On a supported one it goes on to the CLI.
    expect(spawnSync(process.execPath, [STRATA_BIN, '--help'], { encoding: 'utf8' }).status).toBe(0);
  });

  it('a real older Node.js on this machine (when there is one) gets the same message', () => {
    const old = ['/usr/bin/node', '/usr/local/bin/node'].find((bin) => {
      if (!existsSync(bin)) return false;
      const version = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim();
      return /^v\d+\./.test(version) && !atLeast(parseNodeVersion(version), minimumNodeVersion(engines));
    });
    if (old === undefined) return; // every node here is supported: the simulated run above covers the check
    const version = spawnSync(old, ['--version'], { encoding: 'utf8' }).stdout.trim();
    const r = spawnSync(old, [STRATA_BIN, 'status'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`strata: Node.js ${version} is too old: Strata needs Node.js >=22.12`);
  });
});

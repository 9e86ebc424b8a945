/**
 * `strata` loads only the command group it runs (src/cli/main.ts): `strata img ...` must not load
 * the REST client, the daemon commands or the daemon's modules (before, it loaded all of them:
 * 111 modules against 77, ~65 ms more CPU per run), and a daemon command must not load the img
 * tools. The modules a real `node bin/strata.js` process loads are recorded by a module hook
 * (node:module registerHooks, given with --import) and printed when it exits.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/tools.js';
import { assertBuilt } from './helpers.js';

const MARK = 'STRATA_LOADED_MODULES ';

/** An --import module: records every loaded URL and prints them all on stderr at exit. */
const RECORD_LOADS = `
import { registerHooks } from 'node:module';
const loaded = [];
registerHooks({ load(url, context, next) { loaded.push(url); return next(url, context); } });
process.on('exit', () => process.stderr.write(${JSON.stringify(MARK)} + JSON.stringify(loaded) + '\\n'));
`;

/** Runs `strata ARGS` (which must exit 0) and answers the repo's dist/ modules it loaded. */
function modulesOf(args: readonly string[]): string[] {
  const hook = `data:text/javascript,${encodeURIComponent(RECORD_LOADS)}`;
  const r = spawnSync(process.execPath, ['--import', hook, path.join(REPO_ROOT, 'bin/strata.js'), ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`strata ${args.join(' ')} exited ${r.status}:\n${r.stderr}`);
  const line = r.stderr.split('\n').find((l) => l.startsWith(MARK));
  if (line === undefined) throw new Error(`no list of loaded modules in:\n${r.stderr}`);
  const dist = `${path.join(REPO_ROOT, 'dist')}/`;
  return (JSON.parse(line.slice(MARK.length)) as string[])
    .filter((url) => url.startsWith('file:'))
    .map((url) => fileURLToPath(url))
    .filter((p) => p.startsWith(dist))
    .map((p) => p.slice(dist.length));
}

describe('strata loads only the command group it runs', () => {
  beforeAll(assertBuilt);

  it('img loads the img tools, and neither the REST client nor the daemon commands', () => {
    const loaded = modulesOf(['img', 'bench', '--help']);
    expect(loaded).toContain('src/cli/img/bench.js');
    const daemonSide = /^src\/(daemon|api|volume)\/|^src\/cli\/(remote\/(client|common|streams|progress-bar)|volume|pool|snap|serve|status|bucket|user|qos|job|trash|group)/;
    expect(loaded.filter((m) => daemonSide.test(m))).toEqual([]);
  });

  it('a daemon command loads its own group and not the img tools', () => {
    const loaded = modulesOf(['volume', '--help']);
    expect(loaded).toContain('src/cli/volume.js');
    expect(loaded.filter((m) => m.startsWith('src/cli/img/'))).toEqual([]);
  });

  it('--version loads no command group', () => {
    const loaded = modulesOf(['--version']);
    expect(loaded.filter((m) => /^src\/cli\/(img\/|volume|pool|serve|status)/.test(m))).toEqual([]);
  });
});

/**
 * The thread pool LocalHostFile's asynchronous I/O runs on: a process that loads local-file.ts gets
 * HOST_IO_THREADS libuv workers (the threads are counted in /proc, after a real asynchronous pread),
 * unless UV_THREADPOOL_SIZE says otherwise. Runs the build (dist/), as the other CLI tests do.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { HOST_IO_THREADS } from '../../src/sys/thread-pool.js';
import { REPO_ROOT } from '../support/tools.js';
import { assertBuilt } from './helpers.js';

const COUNT_POOL_THREADS = `
import fs from 'node:fs';
import { LocalHostFile } from ${JSON.stringify(path.join(REPO_ROOT, 'dist/src/store/local-file.js'))};
const f = await LocalHostFile.open(process.argv[1], { readOnly: true, syncIo: false });
await f.pread(new Uint8Array(4096), 0);
await f.close();
const names = fs.readdirSync('/proc/self/task').map((t) => fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim());
process.stdout.write(String(names.filter((n) => n === 'libuv-worker').length));
`;

function poolThreads(env: NodeJS.ProcessEnv): number {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', COUNT_POOL_THREADS, path.join(REPO_ROOT, 'package.json')], {
    env,
    encoding: 'utf8',
  });
  return Number(out);
}

describe('the host I/O thread pool', () => {
  beforeAll(assertBuilt);

  it(`has ${HOST_IO_THREADS} threads in a process that uses LocalHostFile`, () => {
    const env = { ...process.env };
    delete env['UV_THREADPOOL_SIZE'];
    expect(poolThreads(env)).toBe(HOST_IO_THREADS);
  });

  it('keeps the size UV_THREADPOOL_SIZE gives', () => {
    expect(poolThreads({ ...process.env, UV_THREADPOOL_SIZE: '6' })).toBe(6);
  });
});

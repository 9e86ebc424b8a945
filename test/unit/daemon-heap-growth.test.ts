/**
 * The daemon's heap growth (src/daemon/heap-growth.ts): V8 ignores a flag it does not know without
 * a word, so the flag's name is checked against the running Node's own list, and a Node process
 * that applies it keeps running and allocating.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { DAEMON_HEAP_GROWING_PERCENT, HEAP_GROWING_FLAG, tuneDaemonHeapGrowth } from '../../src/daemon/heap-growth.js';

describe('daemon heap growth', () => {
  it('names a flag this Node knows', () => {
    const options = execFileSync(process.execPath, ['--v8-options'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    expect(options).toMatch(new RegExp(`^\\s+${HEAP_GROWING_FLAG} \\(`, 'm'));
  });

  it('a process that applies it allocates on as before', () => {
    expect(DAEMON_HEAP_GROWING_PERCENT).toBeGreaterThan(0);
    tuneDaemonHeapGrowth();
    let kept = 0;
    for (let i = 0; i < 2000; i++) kept += Buffer.alloc(64 * 1024, i & 0xff)[0]!;
    expect(kept).toBeGreaterThan(0);
  });
});

/**
 * The daemon's heap growth (src/daemon/heap-growth.ts): V8 ignores a flag it does not know without
 * a word, so the flag's name is checked against the running Node's own list. (Its effect, full GCs
 * per 300 1 MiB PUTs 33 -> 1, is measured in bench/RESULTS.md, not asserted here.)
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { HEAP_GROWING_FLAG } from '../../src/daemon/heap-growth.js';

describe('daemon heap growth', () => {
  it('names a flag this Node knows', () => {
    const options = execFileSync(process.execPath, ['--v8-options'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    expect(options).toMatch(new RegExp(`^\\s+${HEAP_GROWING_FLAG} \\(`, 'm'));
  });
});

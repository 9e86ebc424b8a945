/**
 * The daemon's heap growth (src/daemon/heap-growth.ts): V8 ignores a flag it does not know without
 * a word, so the flag's name is checked against the running Node's own list. (Its effect, full GCs
 * per 300 1 MiB PUTs 33 -> 1, is measured in bench/RESULTS.md, not asserted here.)
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { EXTERNAL_MEMORY_IN_GLOBAL_LIMIT_FLAG, HEAP_GROWING_FLAG } from '../../src/daemon/heap-growth.js';

describe('daemon heap growth', () => {
  it('names flags this Node knows', () => {
    const options = execFileSync(process.execPath, ['--v8-options'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    for (const flag of [HEAP_GROWING_FLAG, EXTERNAL_MEMORY_IN_GLOBAL_LIMIT_FLAG]) expect(options).toMatch(new RegExp(`^\\s+${flag} \\(`, 'm'));
  });

  it('keeps churning ArrayBuffers from starting full GCs once tuned (a process of its own each way)', () => {
    // 2 GiB of 1 MiB buffers, 16 alive at a time: V8's default starts a full GC per 64 MiB of new
    // external memory; counted in the global limit, the dead buffers go with scavenges.
    const script = `
      import { PerformanceObserver, constants } from 'node:perf_hooks';
      if (process.argv[1] === 'tuned') (await import(${JSON.stringify(new URL('../../src/daemon/heap-growth.ts', import.meta.url).href)})).tuneDaemonHeapGrowth();
      let major = 0;
      new PerformanceObserver((list) => { for (const e of list.getEntries()) if (e.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) major++; }).observe({ entryTypes: ['gc'] });
      const alive = [];
      for (let i = 0; i < 2048; i++) {
        const b = new Uint8Array(1024 * 1024); b[0] = i; alive.push(b); if (alive.length > 16) alive.shift();
        if (i % 64 === 0) await new Promise((r) => setImmediate(r));
      }
      await new Promise((r) => setTimeout(r, 100));
      console.log(major);`;
    const majors = (mode: string): number =>
      Number(execFileSync(process.execPath, ['--experimental-strip-types', '--no-warnings', '--input-type=module', '-e', script, mode], { encoding: 'utf8' }).trim());
    const untuned = majors('default');
    const tuned = majors('tuned');
    expect(untuned).toBeGreaterThanOrEqual(8);
    expect(tuned).toBeLessThan(untuned / 4);
  });
});

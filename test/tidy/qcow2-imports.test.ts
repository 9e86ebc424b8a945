/**
 * The qcow2 modules import each other without cycles (issue 11): check, repair, internal snapshots
 * and reference walking see the image through Qcow2Internals, a type-only import, so Qcow2Image can
 * import them statically and none of them imports it back, not even as a type or through `await
 * import()`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/tools.js';
import { importCycles, type SourceFile } from './rules.js';

function qcow2Sources(): SourceFile[] {
  const dir = 'formats/qcow2';
  return readdirSync(path.join(REPO_ROOT, dir))
    .filter((name) => name.endsWith('.ts'))
    .map((name) => ({ path: `${dir}/${name}`, text: readFileSync(path.join(REPO_ROOT, dir, name), 'utf8') }));
}

describe('qcow2 imports', () => {
  it('form no cycle (static, type-only or dynamic)', () => {
    const sources = qcow2Sources();
    expect(sources.map((f) => f.path)).toContain('formats/qcow2/image.ts');
    expect(importCycles(sources).map((cycle) => cycle.join(' -> '))).toEqual([]);
  });

  it('the rule finds cycles through type-only and dynamic imports', () => {
    const files: SourceFile[] = [
      { path: 'formats/qcow2/b.ts', text: "import type { A } from './a.js';\n" },
      { path: 'formats/qcow2/a.ts', text: "export async function f() {\n  const { g } = await import('./b.js');\n}\n" },
      { path: 'formats/qcow2/c.ts', text: "import { A } from './a.js';\nimport { x } from '../../src/core/errors.js';\n" },
    ];
    expect(importCycles(files)).toEqual([['formats/qcow2/a.ts', 'formats/qcow2/b.ts']]);
    expect(importCycles(files.filter((f) => f.path !== 'formats/qcow2/b.ts'))).toEqual([]);
  });
});

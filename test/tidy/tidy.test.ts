/**
 * Tidy: the rules of the code base that a reviewer should not have to check by eye. Fails the
 * build when an import points up the layer list of docs/architecture.md, when koffi is imported
 * outside src/sys, or when a source file passes MAX_SOURCE_LINES. Known debts are listed below
 * with the issue that removes them; a debt that is paid (or grows) fails too, so the lists only
 * shrink.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/tools.js';
import * as qcow2Constants from '../../formats/qcow2/constants.js';
import {
  importsInside,
  lineCount,
  literalSpecConstants,
  packageImportsOutside,
  parseLayers,
  upwardImports,
  type ImportEdge,
  type SourceFile,
} from './rules.js';

const MAX_SOURCE_LINES = 600;

/** src/volume reaches layer files through the LayerStore interface only, never the filesystem. */
const VOLUME_FORBIDDEN = { packages: ['node:fs', 'fs'], modules: ['src/store/local-file.ts'] };

/** Source folders whose files the size rule covers (tests may be longer: they are tables of cases). */
const SOURCE_ROOTS = ['src', 'formats', 'cluster', 'bench'];
const ALL_ROOTS = [...SOURCE_ROOTS, 'test'];

/** Upward imports still to be removed, as `from -> to`, with the issue that removes them. */
const KNOWN_UPWARD_IMPORTS = new Set<string>([]);

/** Files over MAX_SOURCE_LINES, each with the length it may not pass until it is split (none today). */
const KNOWN_LONG_FILES: Record<string, number> = {
};

function walk(root: string): string[] {
  const out: string[] = [];
  const visit = (dir: string): void => {
    let entries;
    try {
      entries = readdirSync(path.join(REPO_ROOT, dir), { withFileTypes: true });
    } catch {
      return; // a root that does not exist yet (cluster/)
    }
    for (const entry of entries) {
      if (entry.name === 'node_modules' || entry.name === 'dist' || entry.name.startsWith('.')) continue;
      const child = `${dir}/${entry.name}`;
      if (entry.isDirectory()) visit(child);
      else if (/\.(ts|js|mjs|cjs)$/.test(entry.name)) out.push(child);
    }
  };
  visit(root);
  return out;
}

function readFiles(roots: readonly string[]): SourceFile[] {
  return roots.flatMap(walk).map((file) => ({ path: file, text: readFileSync(path.join(REPO_ROOT, file), 'utf8') }));
}

const describeEdge = (edge: ImportEdge): string => `${edge.from}:${edge.line} imports ${edge.to}`;
const edgeKey = (edge: ImportEdge): string => `${edge.from} -> ${edge.to}`;

const layers = parseLayers(readFileSync(path.join(REPO_ROOT, 'docs', 'architecture.md'), 'utf8'));

describe('tidy', () => {
  const sources = readFiles(SOURCE_ROOTS);
  // test/tidy itself names koffi and wrong imports in strings, as cases.
  const everything = readFiles(ALL_ROOTS).filter((file) => !file.path.startsWith('test/tidy/'));

  it('reads the layer list from docs/architecture.md, top to bottom', () => {
    expect(layers[0]).toBe('src/cli/');
    expect(layers.at(-1)).toBe('src/core/');
    for (const folder of ['src/daemon/', 'src/api/', 'src/export/', 'src/volume/', 'src/store/', 'formats/', 'src/sys/']) {
      expect(layers).toContain(folder);
    }
    // Every source folder that exists belongs to a layer.
    for (const file of sources.filter((f) => f.path.startsWith('src/') || f.path.startsWith('formats/'))) {
      expect(layers.some((folder) => file.path.startsWith(folder)), file.path).toBe(true);
    }
  });

  it('every import points down the layer list', () => {
    const upward = upwardImports(layers, sources);
    const unexpected = upward.filter((edge) => !KNOWN_UPWARD_IMPORTS.has(edgeKey(edge)));
    expect(unexpected.map(describeEdge), 'imports that point up the layers of docs/architecture.md').toEqual([]);
    const stillThere = new Set(upward.map(edgeKey));
    const paid = [...KNOWN_UPWARD_IMPORTS].filter((key) => !stillThere.has(key));
    expect(paid, 'known upward imports that are gone: remove them from KNOWN_UPWARD_IMPORTS').toEqual([]);
  });

  it('koffi is imported in src/sys only', () => {
    expect(packageImportsOutside('koffi', 'src/sys/', everything).map(describeEdge)).toEqual([]);
  });

  it('src/volume reaches files through LayerStore only: no node:fs, no LocalHostFile', () => {
    expect(importsInside('src/volume/', VOLUME_FORBIDDEN, sources).map(describeEdge)).toEqual([]);
  });

  it(`source files stay under ${MAX_SOURCE_LINES} lines`, () => {
    const tooLong: string[] = [];
    for (const file of sources) {
      const lines = lineCount(file.text);
      const ceiling = KNOWN_LONG_FILES[file.path] ?? MAX_SOURCE_LINES;
      if (lines > ceiling) tooLong.push(`${file.path}: ${lines} lines (at most ${ceiling})`);
    }
    expect(tooLong, 'split the module along its responsibilities').toEqual([]);
    const paid = Object.keys(KNOWN_LONG_FILES).filter((file) => {
      const found = sources.find((f) => f.path === file);
      return found === undefined || lineCount(found.text) <= MAX_SOURCE_LINES;
    });
    expect(paid, 'files now short enough (or gone): remove them from KNOWN_LONG_FILES').toEqual([]);
  });

  it('qcow2 masks and flags are written by name, not as literals', () => {
    const named = new Map<string, bigint>();
    for (const [name, value] of Object.entries(qcow2Constants)) {
      if (typeof value === 'bigint') named.set(name, value);
      else if (typeof value === 'number' && Number.isSafeInteger(value)) named.set(name, BigInt(value));
    }
    expect(named.get('ENTRY_HI_COPIED')).toBe(0x80000000n);
    const formats = sources.filter((f) => f.path.startsWith('formats/qcow2/') && f.path !== 'formats/qcow2/constants.ts');
    expect(literalSpecConstants(named, formats)).toEqual([]);
  });

  it('the rules catch a deliberately wrong tree', () => {
    const wrong: SourceFile[] = [
      { path: 'formats/qcow2/bad.ts', text: "import { x } from '../../src/volume/service.js';\n" },
      { path: 'src/volume/bad.ts', text: "const m = await import('../daemon/daemon.js');\n" },
      { path: 'src/store/bad.ts', text: "import koffi from 'koffi';\n" },
      { path: 'src/core/fine.ts', text: "// import { x } from '../cli/main.js';\nimport { y } from './errors.js';\n" },
    ];
    expect(upwardImports(layers, wrong).map(edgeKey)).toEqual([
      'formats/qcow2/bad.ts -> src/volume/service.ts',
      'src/volume/bad.ts -> src/daemon/daemon.ts',
    ]);
    expect(packageImportsOutside('koffi', 'src/sys/', wrong).map((e) => e.from)).toEqual(['src/store/bad.ts']);
    const volume: SourceFile[] = [
      { path: 'src/volume/a.ts', text: "import fs from 'node:fs/promises';\nimport { x } from 'fs';\n" },
      { path: 'src/volume/b.ts', text: "import { LocalHostFile } from '../store/local-file.js';\nimport { y } from '../store/local-layer-store.js';\n" },
      { path: 'src/volume/c.ts', text: "import path from 'node:path';\nimport { z } from './fsx.js';\n" },
      { path: 'src/store/d.ts', text: "import fs from 'node:fs';\n" },
    ];
    expect(importsInside('src/volume/', VOLUME_FORBIDDEN, volume).map(describeEdge)).toEqual([
      'src/volume/a.ts:1 imports node:fs/promises',
      'src/volume/a.ts:2 imports fs',
      'src/volume/b.ts:1 imports src/store/local-file.ts',
    ]);
    const masks = new Map([['L2E_OFFSET_MASK', 0x00fffffffffffe00n], ['U32', 0xffffffffn]]);
    const literal: SourceFile = { path: 'formats/qcow2/x.ts', text: 'const a = b & 0x00fffffffffffe00n;\nconst c = d & 0xffffffff; // 0x00fffffffffffe00n\n' };
    expect(literalSpecConstants(masks, [literal])).toEqual(['formats/qcow2/x.ts:1: 0x00fffffffffffe00n is L2E_OFFSET_MASK']);
  });
});

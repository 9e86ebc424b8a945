/**
 * The tidy rules, as pure functions over file texts so that a test can feed them a deliberately
 * broken tree and see them fail. tidy.test.ts runs them over the repository.
 */
import path from 'node:path';

export interface SourceFile {
  /** Repository-relative, with forward slashes: `src/volume/service.ts`. */
  readonly path: string;
  readonly text: string;
}

export interface ImportEdge {
  readonly from: string;
  /** Repository-relative path of the imported module, `.js` mapped back to `.ts`. */
  readonly to: string;
  readonly line: number;
}

/**
 * The layer folders, top to bottom, from the fenced block under "## Layers" in
 * docs/architecture.md: each line that starts with a folder name (`src/cli/`, `formats/`).
 */
export function parseLayers(architectureMd: string): string[] {
  const start = architectureMd.indexOf('## Layers');
  if (start < 0) throw new Error('docs/architecture.md has no "## Layers" section');
  const open = architectureMd.indexOf('```', start);
  const close = architectureMd.indexOf('```', open + 3);
  if (open < 0 || close < 0) throw new Error('the "## Layers" section has no fenced block');
  const layers: string[] = [];
  for (const line of architectureMd.slice(open + 3, close).split('\n')) {
    const match = /^([a-z][\w-]*(?:\/[\w-]+)*\/)\s/.exec(line);
    if (match?.[1] !== undefined) layers.push(match[1]);
  }
  if (layers.length < 3) throw new Error(`the layer block lists only ${layers.length} folders`);
  return layers;
}

/** Index of the layer a file belongs to (the longest folder prefix), or -1 outside every layer. */
export function layerIndex(layers: readonly string[], file: string): number {
  let best = -1;
  let bestLength = 0;
  layers.forEach((folder, index) => {
    if (file.startsWith(folder) && folder.length > bestLength) {
      best = index;
      bestLength = folder.length;
    }
  });
  return best;
}

const IMPORT_PATTERNS = [
  /\bfrom\s+'([^']+)'/g, // import ... from '...'; export ... from '...'
  /\bimport\s+'([^']+)'/g, // import '...' (side effects)
  /\bimport\(\s*'([^']+)'\s*\)/g, // await import('...')
];

/** Every module specifier a file names, with its line number. */
export function specifiers(text: string): { specifier: string; line: number }[] {
  const found: { specifier: string; line: number }[] = [];
  const lines = text.split('\n');
  lines.forEach((lineText, index) => {
    const trimmed = lineText.trimStart();
    if (trimmed.startsWith('//') || trimmed.startsWith('*')) return;
    for (const pattern of IMPORT_PATTERNS) {
      for (const match of lineText.matchAll(pattern)) {
        if (match[1] !== undefined) found.push({ specifier: match[1], line: index + 1 });
      }
    }
  });
  return found;
}

/** The relative imports of a file, resolved to repository paths. */
export function relativeImports(file: SourceFile): ImportEdge[] {
  return specifiers(file.text)
    .filter(({ specifier }) => specifier.startsWith('.'))
    .map(({ specifier, line }) => ({
      from: file.path,
      to: path.posix.normalize(path.posix.join(path.posix.dirname(file.path), specifier)).replace(/\.js$/, '.ts'),
      line,
    }));
}

/** Imports that point up the layer list. */
export function upwardImports(layers: readonly string[], files: readonly SourceFile[]): ImportEdge[] {
  const upward: ImportEdge[] = [];
  for (const file of files) {
    const fromLayer = layerIndex(layers, file.path);
    if (fromLayer < 0) continue;
    for (const edge of relativeImports(file)) {
      const toLayer = layerIndex(layers, edge.to);
      if (toLayer >= 0 && toLayer < fromLayer) upward.push(edge);
    }
  }
  return upward;
}

/** Files outside `allowedFolder` that import the named package. */
export function packageImportsOutside(packageName: string, allowedFolder: string, files: readonly SourceFile[]): ImportEdge[] {
  const found: ImportEdge[] = [];
  for (const file of files) {
    if (file.path.startsWith(allowedFolder)) continue;
    for (const { specifier, line } of specifiers(file.text)) {
      if (specifier === packageName || specifier.startsWith(`${packageName}/`)) found.push({ from: file.path, to: specifier, line });
    }
  }
  return found;
}

/**
 * Imports by files under `folder` of any of `packages` (a package or one of its subpaths: `fs`
 * covers `fs/promises`) or of any of `modules` (repository paths, reached by relative imports).
 */
export function importsInside(
  folder: string,
  forbidden: { packages: readonly string[]; modules: readonly string[] },
  files: readonly SourceFile[],
): ImportEdge[] {
  const found: ImportEdge[] = [];
  for (const file of files) {
    if (!file.path.startsWith(folder)) continue;
    for (const { specifier, line } of specifiers(file.text)) {
      if (forbidden.packages.some((name) => specifier === name || specifier.startsWith(`${name}/`))) {
        found.push({ from: file.path, to: specifier, line });
      }
    }
    for (const edge of relativeImports(file)) if (forbidden.modules.includes(edge.to)) found.push(edge);
  }
  return found;
}

export function lineCount(text: string): number {
  return text.endsWith('\n') ? text.split('\n').length - 1 : text.split('\n').length;
}

/** Values too generic to stand for one spec field (a byte, a u16 or u32 of all ones). */
const GENERIC_MASKS = new Set<bigint>([0xffn, 0xffffn, 0xffffffffn, 0xffffffffffffffffn]);

/**
 * Hex literals (three digits or more) in `files` whose value is that of a named spec constant:
 * the constant should be used instead. `constants` maps names to their values.
 */
export function literalSpecConstants(constants: ReadonlyMap<string, bigint>, files: readonly SourceFile[]): string[] {
  const byValue = new Map<bigint, string>();
  for (const [name, value] of constants) if (!GENERIC_MASKS.has(value) && value >= 0x100n) byValue.set(value, name);
  const found: string[] = [];
  for (const file of files) {
    file.text.split('\n').forEach((line, index) => {
      const code = line.replace(/\/\/.*$/, '');
      if (code.trimStart().startsWith('*')) return;
      for (const match of code.matchAll(/\b0x([0-9a-fA-F_]{3,})n?\b/g)) {
        const value = BigInt(`0x${(match[1] as string).replaceAll('_', '')}`);
        const name = byValue.get(value);
        if (name !== undefined) found.push(`${file.path}:${index + 1}: ${match[0]} is ${name}`);
      }
    });
  }
  return found;
}

/**
 * Import cycles among `files` (static, type-only and dynamic imports alike: a cycle hidden behind
 * `import type` or `await import()` still ties the modules together), each as the list of files
 * around it, starting from its smallest path. Imports of files outside `files` are ignored.
 */
export function importCycles(files: readonly SourceFile[]): string[][] {
  const known = new Set(files.map((f) => f.path));
  const edges = new Map<string, string[]>();
  for (const file of files) {
    const targets = relativeImports(file).map((edge) => edge.to).filter((to) => known.has(to));
    edges.set(file.path, [...new Set(targets)].sort());
  }
  const cycles = new Map<string, string[]>();
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): void => {
    state.set(node, 'visiting');
    stack.push(node);
    for (const next of edges.get(node) ?? []) {
      if (state.get(next) === 'visiting') {
        const cycle = stack.slice(stack.indexOf(next));
        const first = cycle.indexOf([...cycle].sort()[0] as string);
        const rotated = [...cycle.slice(first), ...cycle.slice(0, first)];
        cycles.set(rotated.join(' -> '), rotated);
      } else if (state.get(next) === undefined) {
        visit(next);
      }
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const path of [...known].sort()) if (state.get(path) === undefined) visit(path);
  return [...cycles.values()];
}

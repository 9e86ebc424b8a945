/**
 * Helpers for the CLI tests: run the built `strata` (bin/strata.js, which needs `npx tsc -p .`
 * first; `npm test` does that) and qemu-img / qemu-io in a test's temporary directory, so file
 * names in their output are the same relative names.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { REPO_ROOT, expectSuccess, qemuImg, qemuIo, run, strata, type RunResult } from '../support/tools.js';

export const CLI_BUILT = existsSync(path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js'));

export function assertBuilt(): void {
  if (!CLI_BUILT) throw new Error('the CLI is not built: run `npx tsc -p .` (npm test does) before these tests');
}

/** `strata img ...` in dir. */
export function img(dir: string, args: readonly string[], input?: string): RunResult {
  return strata(['img', ...args], { cwd: dir, ...(input !== undefined ? { input } : {}) });
}

export function imgOk(dir: string, args: readonly string[], input?: string): RunResult {
  return expectSuccess(img(dir, args, input), `strata img ${args.join(' ')}`);
}

export function q(dir: string, args: readonly string[]): RunResult {
  return qemuImg(args, { cwd: dir });
}

export function qOk(dir: string, args: readonly string[]): RunResult {
  return expectSuccess(q(dir, args), `qemu-img ${args.join(' ')}`);
}

export function qio(dir: string, args: readonly string[]): RunResult {
  return qemuIo(args, { cwd: dir });
}

export function qioOk(dir: string, args: readonly string[]): RunResult {
  return expectSuccess(qio(dir, args), `qemu-io ${args.join(' ')}`);
}

/** qemu-io with several -c commands; output checked for success. */
export function qioCmds(dir: string, file: string, commands: readonly string[], format?: string): RunResult {
  const args = [...(format ? ['-f', format] : []), ...commands.flatMap((c) => ['-c', c]), file];
  return qioOk(dir, args);
}

export function strataJson<T = unknown>(dir: string, args: readonly string[]): T {
  return JSON.parse(imgOk(dir, args).stdout) as T;
}

export function qemuJson<T = unknown>(dir: string, args: readonly string[]): T {
  return JSON.parse(qOk(dir, args).stdout) as T;
}

/** Removes keys (at any depth) whose values legitimately differ between the two tools. */
export function without(value: unknown, keys: readonly string[]): unknown {
  if (Array.isArray(value)) return value.map((v) => without(v, keys));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) if (!keys.includes(k)) out[k] = without(v, keys);
    return out;
  }
  return value;
}

/** Lines of qemu-io/strata io output with the timing lines (which differ run to run) removed. */
export function withoutTimings(text: string): string[] {
  return text.split('\n').filter((line) => line.length > 0 && !/ ops; .*ops\/sec\)$/.test(line));
}

/** The one-line error format: "strata: <what> (<what to do>)". */
export function expectErrorLine(result: RunResult, code: number, pattern?: RegExp): void {
  expect(result.code, `stdout: ${result.stdout}\nstderr: ${result.stderr}`).toBe(code);
  const lines = result.stderr.trimEnd().split('\n');
  const last = lines[lines.length - 1] ?? '';
  expect(last).toMatch(/^strata: .+ \(.+\)$/);
  if (pattern) expect(result.stderr).toMatch(pattern);
}

/** Byte offset of the qcow2 refcount block holding cluster `index`'s refcount (16-bit refcounts). */
function refcountEntryOffset(bytes: Buffer, index: number): number {
  const clusterBits = bytes.readUInt32BE(20);
  const refcountTableOffset = Number(bytes.readBigUInt64BE(48));
  const entriesPerBlock = 2 ** clusterBits / 2;
  const block = Number(bytes.readBigUInt64BE(refcountTableOffset + 8 * Math.floor(index / entriesPerBlock)));
  if (block === 0) throw new Error(`no refcount block for cluster ${index}`);
  return block + 2 * (index % entriesPerBlock);
}

/** Appends one cluster to a qcow2 file and gives it refcount 1: a leaked cluster. */
export function makeLeak(file: string): void {
  const bytes = readFileSync(file);
  const clusterSize = 2 ** bytes.readUInt32BE(20);
  const index = Math.ceil(bytes.length / clusterSize);
  const grown = Buffer.alloc(index * clusterSize + clusterSize);
  bytes.copy(grown);
  grown.writeUInt16BE(1, refcountEntryOffset(grown, index));
  writeFileSync(file, grown);
}

/** Sets the refcount of the host cluster at hostOffset to 0 although it is in use: a corruption. */
export function zeroRefcount(file: string, hostOffset: number): void {
  const bytes = readFileSync(file);
  const clusterSize = 2 ** bytes.readUInt32BE(20);
  bytes.writeUInt16BE(0, refcountEntryOffset(bytes, Math.floor(hostOffset / clusterSize)));
  writeFileSync(file, bytes);
}

export { run };

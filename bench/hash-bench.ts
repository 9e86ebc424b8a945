/**
 * Which hash names chunks (issue 12): node:crypto sha256 and blake2b512, BLAKE3 from the
 * @napi-rs/blake-hash package, and XXH3-128 from the system libxxhash through koffi, on 4 KiB,
 * 64 KiB and 1 MiB chunks of random data. Each cell runs several times and prints every run
 * (GiB/s and the cost of one call), then the median. xxh128 is not collision resistant, so sharing
 * a chunk by it needs a byte compare against the stored copy: the bench also times what that costs
 * at the least (a pread of the stored chunk from the page cache, then a memcmp).
 *
 *   npm run bench:hash -- [--runs 5] [--mib 64] [--blake3 /path/to/@napi-rs/blake-hash/index.js]
 *
 * BLAKE3 is skipped (and says so) when the package cannot be imported.
 */
import { hash as nodeHash, randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync, fsyncSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { xxh128Hex, isXxhashAvailable } from '../src/sys/xxhash.js';
import { argValue, exitOnHelp, median } from './args.js';

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;
const CHUNK_SIZES_BYTES = [4 * KIB, 64 * KIB, MIB];

type HashFunction = (data: Uint8Array) => unknown;

interface Blake3Module {
  blake3(input: Uint8Array): Uint8Array;
}

async function loadBlake3(modulePath: string): Promise<HashFunction | string> {
  try {
    const mod = (await import(modulePath)) as Partial<Blake3Module> & { default?: Partial<Blake3Module> };
    const blake3 = mod.blake3 ?? mod.default?.blake3;
    if (typeof blake3 !== 'function') return `${modulePath} has no blake3 function`;
    return (data) => blake3(data);
  } catch (err) {
    return `cannot import ${modulePath}: ${err instanceof Error ? err.message : String(err)}`;
  }
}

/** Hashes every chunk of `data` once; returns seconds. */
function timeHashing(fn: HashFunction, data: Uint8Array, chunkBytes: number): number {
  const start = process.hrtime.bigint();
  for (let offset = 0; offset + chunkBytes <= data.length; offset += chunkBytes) fn(data.subarray(offset, offset + chunkBytes));
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** The least a byte compare costs: pread the stored copy (page cache) and memcmp it; returns seconds. */
function timeByteCompare(fd: number, data: Uint8Array, chunkBytes: number): number {
  const stored = Buffer.allocUnsafe(chunkBytes);
  const start = process.hrtime.bigint();
  for (let offset = 0; offset + chunkBytes <= data.length; offset += chunkBytes) {
    readSync(fd, stored, 0, chunkBytes, offset);
    if (Buffer.compare(stored, data.subarray(offset, offset + chunkBytes)) !== 0) throw new Error('the stored copy differs');
  }
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function report(name: string, chunkBytes: number, totalBytes: number, runSeconds: number[]): void {
  const calls = Math.floor(totalBytes / chunkBytes);
  const rates = runSeconds.map((seconds) => totalBytes / GIB / seconds);
  const perCallUs = runSeconds.map((seconds) => (seconds * 1e6) / calls);
  const cell = `${name.padEnd(24)} ${String(chunkBytes / KIB).padStart(5)} KiB`;
  for (const [i, rate] of rates.entries()) {
    console.log(`${cell}  run ${i + 1}: ${rate.toFixed(2).padStart(6)} GiB/s  ${perCallUs[i]!.toFixed(2).padStart(8)} µs/call`);
  }
  console.log(`${cell}  median: ${median(rates).toFixed(2).padStart(6)} GiB/s  ${median(perCallUs).toFixed(2).padStart(8)} µs/call`);
}

async function main(): Promise<void> {
  exitOnHelp(import.meta.url);
  const runs = Number(argValue('--runs', '5'));
  const totalBytes = Number(argValue('--mib', '64')) * MIB;
  const blake3Path = argValue('--blake3', process.env.STRATA_BLAKE3_MODULE ?? '@napi-rs/blake-hash');
  const data = randomFillSync(Buffer.allocUnsafe(totalBytes));

  const functions: [string, HashFunction][] = [
    ['sha256 (node:crypto)', (d) => nodeHash('sha256', d, 'buffer')],
    ['blake2b512 (node:crypto)', (d) => nodeHash('blake2b512', d, 'buffer')],
  ];
  const blake3 = await loadBlake3(blake3Path);
  if (typeof blake3 === 'string') console.log(`BLAKE3 skipped: ${blake3}`);
  else functions.push(['blake3 (@napi-rs)', blake3]);
  if (isXxhashAvailable()) functions.push(['xxh128 (libxxhash)', xxh128Hex]);
  else console.log('xxh128 skipped: libxxhash.so.0 cannot be loaded');

  // The stored copies the byte compare reads back: a file in the page cache.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'strata-hash-bench-'));
  const fd = openSync(path.join(dir, 'stored'), 'w+');
  try {
    writeSync(fd, data, 0, data.length, 0);
    fsyncSync(fd);
    console.log(`node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${runs} runs of ${totalBytes / MIB} MiB per cell`);
    for (const chunkBytes of CHUNK_SIZES_BYTES) {
      for (const [name, fn] of functions) {
        timeHashing(fn, data.subarray(0, Math.min(totalBytes, 8 * MIB)), chunkBytes); // warm-up
        report(name, chunkBytes, totalBytes, Array.from({ length: runs }, () => timeHashing(fn, data, chunkBytes)));
      }
      timeByteCompare(fd, data.subarray(0, Math.min(totalBytes, 8 * MIB)), chunkBytes);
      report('compare (pread+memcmp)', chunkBytes, totalBytes, Array.from({ length: runs }, () => timeByteCompare(fd, data, chunkBytes)));
    }
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();

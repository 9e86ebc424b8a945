/**
 * Content exports and imports skip holes end to end (issue 10): `strata volume export` of a big
 * thin volume asks the daemon for a sparse stream, so the zeroes never cross the connection; to a
 * file (or to stdout redirected to a file) the result is a sparse file, into a pipe the zeroes come
 * from memory; `strata volume import` of a sparse file sends only its data. The CLI talks to the
 * daemon through a counting TCP proxy: the bytes on the wire are the cost assertion (no timings);
 * qemu-img compare and byte comparison are the correctness ones, stat blocks the sparseness.
 */
import { spawn } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, readFileSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GiB, MiB } from '../../src/core/units.js';
import { qemuImg, requireTool, STRATA_BIN, REPO_ROOT } from '../support/tools.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { assertBuilt, patternBytes, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const VOLUME_BYTES = 10 * GiB;
/** Headers, JSON and record headers: far below one data chunk. */
const WIRE_SLACK_BYTES = 256 * 1024;

/** A TCP proxy to the daemon that counts the bytes each way. */
class CountingProxy {
  toDaemonBytes = 0;
  fromDaemonBytes = 0;
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(target: URL) {
    this.server = net.createServer((client) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.on('data', (b: Buffer) => (this.toDaemonBytes += b.length));
      upstream.on('data', (b: Buffer) => (this.fromDaemonBytes += b.length));
      client.pipe(upstream);
      upstream.pipe(client);
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  reset(): void {
    this.toDaemonBytes = 0;
    this.fromDaemonBytes = 0;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Runs the CLI with stdout going to `stdout` (a file descriptor, or 'pipe' collected by onData). */
function runCli(d: Daemon, url: string, args: string[], stdout: number | ((chunk: Buffer) => void)): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [STRATA_BIN, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...d.env({ STRATA_URL: url }) } as NodeJS.ProcessEnv,
    stdio: ['ignore', typeof stdout === 'number' ? stdout : 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
  if (typeof stdout === 'function') child.stdout!.on('data', stdout);
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
}

async function cliOk(d: Daemon, url: string, args: string[], stdout: number | ((chunk: Buffer) => void) = () => {}): Promise<void> {
  const r = await runCli(d, url, args, stdout);
  if (r.code !== 0) throw new Error(`strata ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
}

/** Allocated bytes of a file (st_blocks). */
function allocatedBytes(file: string): number {
  return statSync(file).blocks * 512;
}

describe.skipIf(!requireTool('qemu-img'))('sparse content transfer', () => {
  let d: Daemon;
  let proxy: CountingProxy;
  let url: string;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    d = await startDaemon(f('data'));
    proxy = new CountingProxy(new URL(d.url));
    url = await proxy.listen();
  });
  afterAll(async () => {
    await proxy?.close();
    if (d) expect((await d.stop()).code).toBe(0);
    tmp?.cleanup();
  });

  it('an empty 10 GiB snapshot exports to a file and to stdout-as-a-file as sparse files, with almost nothing on the wire', async () => {
    d.cliOk(['volume', 'create', 'empty', '10G']);
    d.cliOk(['snap', 'create', 'empty@base']);

    proxy.reset();
    await cliOk(d, url, ['volume', 'export', 'empty@base', f('empty.raw')]);
    expect(proxy.fromDaemonBytes).toBeLessThan(WIRE_SLACK_BYTES);
    expect(statSync(f('empty.raw')).size).toBe(VOLUME_BYTES);
    expect(allocatedBytes(f('empty.raw'))).toBeLessThan(MiB);

    // `strata volume export empty@base - > out.raw`: stdout is a regular file.
    proxy.reset();
    const fd = openSync(f('stdout.raw'), 'w');
    try {
      await cliOk(d, url, ['volume', 'export', 'empty@base', '-'], fd);
      // stdout's offset ends after the export: what is written next follows it.
      writeSync(fd, 'tail');
    } finally {
      closeSync(fd);
    }
    expect(proxy.fromDaemonBytes).toBeLessThan(WIRE_SLACK_BYTES);
    expect(statSync(f('stdout.raw')).size).toBe(VOLUME_BYTES + 4);
    expect(allocatedBytes(f('stdout.raw'))).toBeLessThan(MiB);
    const tail = Buffer.alloc(8);
    const rd = openSync(f('stdout.raw'), 'r');
    readSync(rd, tail, 0, tail.length, VOLUME_BYTES - 4);
    closeSync(rd);
    expect(tail.toString('latin1')).toBe('\0\0\0\0tail');

    // qcow2: a small standalone image whatever the size.
    proxy.reset();
    await cliOk(d, url, ['volume', 'export', 'empty@base', f('empty.qcow2'), '--format', 'qcow2']);
    expect(proxy.fromDaemonBytes).toBeLessThan(2 * MiB);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', f('empty.raw'), f('empty.qcow2')]).code).toBe(0);
  });

  it('a 10 GiB volume with scattered data: import sends only the data, exports are byte-identical and sparse', async () => {
    // A sparse source file: 3 MB pieces at unaligned offsets across 10 GiB, the last one ending at the end.
    const source = f('source.raw');
    const pieceBytes = 3_000_000;
    const offsets = [...Array.from({ length: 9 }, (_, i) => i * GiB + i * 12_345), VOLUME_BYTES - pieceBytes];
    const dataBytes = writeSparseSource(source, VOLUME_BYTES, offsets, pieceBytes);

    proxy.reset();
    await cliOk(d, url, ['volume', 'import', source, 'scattered']);
    // Only the data travels (rounded to the file system's blocks).
    expect(proxy.toDaemonBytes).toBeLessThan(dataBytes + offsets.length * 2 * 4096 + WIRE_SLACK_BYTES);
    const info = d.json<{ provisionedBytes: number; allocatedBytes: number; location: string }>(['volume', 'info', 'scattered']);
    expect(info.provisionedBytes).toBe(VOLUME_BYTES);
    expect(info.allocatedBytes).toBeLessThan(dataBytes + 16 * MiB);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', source, info.location]).code).toBe(0);
    d.cliOk(['snap', 'create', 'scattered@s']);
    // Data goes out in whole clusters (64 KiB).
    const exportWireBytes = dataBytes + offsets.length * 2 * 64 * 1024 + WIRE_SLACK_BYTES;

    proxy.reset();
    await cliOk(d, url, ['volume', 'export', 'scattered@s', f('out.raw')]);
    expect(proxy.fromDaemonBytes).toBeLessThan(exportWireBytes);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'raw', source, f('out.raw')]).code).toBe(0);
    expect(allocatedBytes(f('out.raw'))).toBeLessThan(dataBytes + 16 * MiB);

    proxy.reset();
    const out = openSync(f('stdout.raw'), 'w');
    try {
      await cliOk(d, url, ['volume', 'export', 'scattered@s', '-'], out);
    } finally {
      closeSync(out);
    }
    expect(proxy.fromDaemonBytes).toBeLessThan(exportWireBytes);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'raw', source, f('stdout.raw')]).code).toBe(0);
    expect(allocatedBytes(f('stdout.raw'))).toBeLessThan(dataBytes + 16 * MiB);

    await cliOk(d, url, ['volume', 'export', 'scattered@s', f('out.qcow2'), '--format', 'qcow2']);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', source, f('out.qcow2')]).code).toBe(0);
    // ...and back in: a qcow2 file is sent as a sparse stream too.
    await cliOk(d, url, ['volume', 'import', f('out.qcow2'), 'from-qcow2']);
    const back = d.json<{ location: string }>(['volume', 'info', 'from-qcow2']);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', source, back.location]).code).toBe(0);
  });

  it('into a pipe, the zero runs come from memory and the bytes are exact', async () => {
    // 1 GiB keeps the pipe short; data at the start, in the middle (unaligned) and at the end.
    const sizeBytes = GiB;
    const source = f('piped.raw');
    const pieceBytes = 1_500_000;
    const dataBytes = writeSparseSource(source, sizeBytes, [0, 512 * MiB + 4096 + 17, sizeBytes - pieceBytes], pieceBytes);
    await cliOk(d, url, ['volume', 'import', source, 'piped']);
    d.cliOk(['snap', 'create', 'piped@s']);

    proxy.reset();
    const expected = openSync(source, 'r');
    let pos = 0;
    let mismatchAt: number | undefined;
    try {
      await cliOk(d, url, ['volume', 'export', 'piped@s', '-'], (chunk) => {
        const want = Buffer.alloc(chunk.length);
        readSync(expected, want, 0, chunk.length, pos);
        if (mismatchAt === undefined && !want.equals(chunk)) mismatchAt = pos;
        pos += chunk.length;
      });
    } finally {
      closeSync(expected);
    }
    expect(mismatchAt).toBeUndefined();
    expect(pos).toBe(sizeBytes);
    expect(proxy.fromDaemonBytes).toBeLessThan(dataBytes + 3 * 2 * 64 * 1024 + WIRE_SLACK_BYTES);
  });

  it('stdout appending to a file (>>) gets every byte after what the file held', async () => {
    d.cliOk(['volume', 'create', 'small', '4M']);
    d.cliOk(['snap', 'create', 'small@s']);
    writeFileSync(f('appended.raw'), 'head');
    const fd = openSync(f('appended.raw'), 'a');
    try {
      await cliOk(d, url, ['volume', 'export', 'small@s', '-'], fd);
    } finally {
      closeSync(fd);
    }
    const bytes = readFileSync(f('appended.raw'));
    expect(bytes.length).toBe(4 + 4 * MiB);
    expect(bytes.subarray(0, 4).toString('latin1')).toBe('head');
    expect(bytes.subarray(4).equals(Buffer.alloc(4 * MiB))).toBe(true);
  });
});

/** Writes a sparse file of sizeBytes with pieceBytes of data at each offset; returns the data bytes. */
function writeSparseSource(file: string, sizeBytes: number, offsets: readonly number[], pieceBytes: number): number {
  const fd = openSync(file, 'w');
  try {
    offsets.forEach((offset, i) => writeSync(fd, patternBytes(pieceBytes, i + 1), 0, pieceBytes, offset));
    ftruncateSync(fd, sizeBytes);
  } finally {
    closeSync(fd);
  }
  return offsets.length * pieceBytes;
}

/**
 * The NBD server against real clients: qemu-img, qemu-io, nbdinfo, nbdcopy and fio, each talking to
 * an in-process NbdServer over a unix socket in front of a qcow2 image in a temp dir.
 */
import path from 'node:path';
import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../support/tmp.js';
import { expectSuccess, requireTool, run, runAsync } from '../support/tools.js';
import { createImage, serveImage } from './helpers.js';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

/** Fills an image locally (before it is served) with data, zeroes and discarded ranges. */
function populate(imagePath: string): void {
  expectSuccess(
    run('qemu-io', [
      '-f', 'qcow2',
      '-c', 'write -P 0x11 0 1M',
      '-c', 'write -P 0x22 3M 200k',
      '-c', 'write -z 8M 1M',
      '-c', 'write -P 0x33 20M 4M',
      '-c', 'discard 21M 1M',
      '-c', 'write -P 0x44 63M 1M',
      imagePath,
    ]),
    'qemu-io populate',
  );
}

interface MapRun {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
}

/** qemu-img map JSON reduced to merged (data, zero) runs, so layouts with different granularity compare. */
function normalizeMap(json: string): MapRun[] {
  const runs: MapRun[] = [];
  for (const e of JSON.parse(json) as MapRun[]) {
    const last = runs[runs.length - 1];
    if (last && last.data === e.data && last.zero === e.zero && last.start + last.length === e.start) last.length += e.length;
    else runs.push({ start: e.start, length: e.length, data: e.data, zero: e.zero });
  }
  return runs;
}

/** Deterministic pseudo-random numbers (xorshift32). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('NBD server with qemu-img and qemu-io', () => {
  it('qemu-img info, map, compare and convert over NBD agree with the local image', async () => {
    const dir = tempDir();
    const imagePath = createImage(dir, SIZE);
    populate(imagePath);
    const localMap = normalizeMap(expectSuccess(run('qemu-img', ['map', '--output=json', '-f', 'qcow2', imagePath])).stdout);
    const s = await serveImage(dir, imagePath, { readOnly: true });
    try {
      const info = JSON.parse(expectSuccess(await runAsync('qemu-img', ['info', '--output=json', s.uri()])).stdout) as {
        'virtual-size': number;
      };
      expect(info['virtual-size']).toBe(SIZE);

      const nbdMap = normalizeMap(expectSuccess(await runAsync('qemu-img', ['map', '--output=json', '-f', 'raw', s.uri()])).stdout);
      expect(nbdMap).toEqual(localMap);
      expect(nbdMap.some((r) => r.data)).toBe(true);
      expect(nbdMap.some((r) => !r.data && r.zero)).toBe(true);

      const cmp = await runAsync('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'qcow2', s.uri(), imagePath]);
      expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);

      const converted = path.join(dir, 'converted.qcow2');
      expectSuccess(await runAsync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', s.uri(), converted]), 'convert');
      expect(run('qemu-img', ['compare', '-U', converted, imagePath]).code).toBe(0);
      // convert keeps holes: the copy maps like the original.
      expect(normalizeMap(run('qemu-img', ['map', '--output=json', converted]).stdout)).toEqual(localMap);
    } finally {
      await s.close();
    }
  });

  it('serves the same export over TCP and a unix socket at once', async () => {
    const dir = tempDir();
    const imagePath = createImage(dir, SIZE);
    const s = await serveImage(dir, imagePath, { tcp: true });
    try {
      const port = s.server.tcpPort;
      expect(port).toBeGreaterThan(0);
      const tcpUri = `nbd://127.0.0.1:${port}/vol`;
      expectSuccess(await runAsync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 1M 1M', tcpUri]), 'qemu-io over TCP');
      expectSuccess(await runAsync('qemu-io', ['-f', 'raw', '-c', 'read -P 0x77 1M 1M', s.uri()]), 'qemu-io over unix');
    } finally {
      await s.close();
    }
  });

  it('qemu-io random writes over NBD match the same writes done locally', async () => {
    const dir = tempDir();
    const served = createImage(dir, SIZE, 'served.qcow2');
    const reference = createImage(dir, SIZE, 'reference.qcow2');
    const rand = rng(0x5eed);
    const cmds: string[] = [];
    for (let i = 0; i < 300; i++) {
      const r = rand();
      if (r < 0.7) {
        const len = 512 * (1 + Math.floor(rand() * 512)); // up to 256 KiB, unaligned to clusters
        const off = 512 * Math.floor(rand() * ((SIZE - len) / 512));
        cmds.push(`write -P 0x${(1 + Math.floor(rand() * 254)).toString(16)} ${off} ${len}`);
      } else if (r < 0.85) {
        const len = 4096 * (1 + Math.floor(rand() * 64));
        const off = 4096 * Math.floor(rand() * ((SIZE - len) / 4096));
        cmds.push(`write -z ${off} ${len}`);
      } else {
        const len = 65536 * (1 + Math.floor(rand() * 8)); // cluster-aligned: qcow2 discards whole clusters
        const off = 65536 * Math.floor(rand() * ((SIZE - len) / 65536));
        cmds.push(`discard ${off} ${len}`);
      }
      if (i % 50 === 49) cmds.push('flush');
    }
    const script = cmds.join('\n') + '\n';
    expectSuccess(run('qemu-io', ['-f', 'qcow2', reference], { input: script }), 'qemu-io local');

    const s = await serveImage(dir, served);
    try {
      expectSuccess(await runAsync('qemu-io', ['-f', 'raw', s.uri()], { input: script }), 'qemu-io over NBD');
      const live = await runAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', s.uri(), reference]);
      expect(live.code, live.stdout + live.stderr).toBe(0);
    } finally {
      await s.close();
    }
    const cmp = run('qemu-img', ['compare', served, reference]);
    expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    expect(run('qemu-img', ['check', served]).code).toBe(0);
  });
});

describe.skipIf(!requireTool('nbdinfo', 'nbdcopy', 'qemu-img', 'qemu-io'))('NBD server with libnbd tools', () => {
  it('nbdinfo --map shows data, holes and zeroes; nbdinfo --list shows the exports', async () => {
    const dir = tempDir();
    const imagePath = createImage(dir, SIZE);
    populate(imagePath);
    const s = await serveImage(dir, imagePath);
    try {
      const map = JSON.parse(expectSuccess(await runAsync('nbdinfo', ['--map', '--json', s.uri()])).stdout) as {
        offset: number;
        length: number;
        type: number;
        description: string;
      }[];
      const at = (off: number) => map.find((e) => e.offset <= off && off < e.offset + e.length);
      expect(at(0)?.description).toBe('data');
      expect(at(2 * MiB)?.description).toBe('hole,zero');
      expect(at(8 * MiB)?.type).toBe(3);
      expect(at(20 * MiB)?.description).toBe('data');
      expect(at(21 * MiB)?.type).toBe(3);
      expect(at(63 * MiB)?.description).toBe('data');
      expect(map.reduce((n, e) => n + e.length, 0)).toBe(SIZE);

      const list = expectSuccess(await runAsync('nbdinfo', ['--list', '--json', `nbd+unix://?socket=${s.socketPath}`])).stdout;
      const exports = (JSON.parse(list) as { exports: { 'export-name': string; description?: string }[] }).exports;
      expect(exports.map((e) => e['export-name'])).toEqual(['vol']);
      expect(exports[0]?.description).toBe('test volume');
    } finally {
      await s.close();
    }
  });

  it('nbdcopy copies byte for byte, out of and into an export', async () => {
    const dir = tempDir();
    const imagePath = createImage(dir, SIZE);
    populate(imagePath);
    const target = createImage(dir, SIZE, 'target.qcow2');
    const out = path.join(dir, 'out.raw');
    const s = await serveImage(dir, imagePath, { extra: {} });
    try {
      expectSuccess(await runAsync('nbdcopy', [s.uri(), out]), 'nbdcopy out');
      expect(run('qemu-img', ['compare', '-U', '-f', 'raw', '-F', 'qcow2', out, imagePath]).code).toBe(0);
    } finally {
      await s.close();
    }
    const t = await serveImage(dir, target);
    try {
      expectSuccess(await runAsync('nbdcopy', ['--flush', out, t.uri()]), 'nbdcopy in');
      const cmp = await runAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', t.uri(), out]);
      expect(cmp.code, cmp.stdout + cmp.stderr).toBe(0);
    } finally {
      await t.close();
    }
    expect(run('qemu-img', ['compare', target, imagePath]).code).toBe(0);
  });
});

describe.skipIf(!requireTool('fio', 'qemu-img'))('NBD server with fio', () => {
  it('fio ioengine=nbd with verify=crc32c on a mixed random workload', async () => {
    const dir = tempDir();
    const imagePath = createImage(dir, SIZE);
    const s = await serveImage(dir, imagePath);
    const job = path.join(dir, 'job.fio');
    writeFileSync(
      job,
      [
        '[global]',
        'ioengine=nbd',
        `uri=${s.uri()}`,
        'size=48M',
        'iodepth=32',
        'verify=crc32c',
        'verify_fatal=1',
        'randrepeat=1',
        'verify_state_save=0',
        '[mixed]',
        'rw=randrw',
        'rwmixread=40',
        'bsrange=4k-128k',
        'loops=6',
        '',
      ].join('\n'),
    );
    try {
      const r = await runAsync('fio', ['--output-format=json', job], { cwd: dir, timeoutMs: 60_000 });
      expect(r.code, r.stdout.slice(-2000) + r.stderr).toBe(0);
      const result = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number } }[] };
      expect(result.jobs[0]?.error).toBe(0);
      expect(result.jobs[0]?.write.io_bytes).toBeGreaterThan(0);
    } finally {
      await s.close();
    }
    expect(run('qemu-img', ['check', imagePath]).code).toBe(0);
  });
});

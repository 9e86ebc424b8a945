/**
 * Dedup pools end to end through the daemon, with real clients: qemu-io writes patterns over NBD,
 * a snapshot is taken and sealed in the background (a 'seal' job), qemu-img compare reads the
 * volume and the snapshot back over NBD against a reference raw file; two volumes imported from
 * one source take about one copy of physical space (`pool df`); deleting them and `pool gc` with
 * a short grace gives the space back.
 */
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { JobJson, PoolDfJson, PoolGcJson, PoolJson } from '../../src/api/rest/schemas.js';
import { qemuImg, qemuIo, requireTool } from '../support/tools.js';
import { assertBuilt, folderBytes, patternBytes, qemuCompare, useDaemon, waitForSeals, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 32 * MiB;


describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('dedup pools through the daemon', () => {
  const suite = useDaemon();
  const f = (name: string) => suite.file(name);
  const tcp = (name: string) => `nbd://${suite.d.nbdAddress}/${name}`;
  let d: Daemon;
  beforeAll(() => {
    d = suite.d;
  });

  it('creates dedup pools, shows their configuration, and refuses bad settings naming the fix', async () => {
    const pool = d.json<PoolJson>(['pool', 'create', 'dd', '--dedup']);
    expect(pool).toMatchObject({ name: 'dd', kind: 'dedup', dedup: { hash: 'blake3', tier: null, tierActive: false } });
    expect(d.cliOk(['pool', 'info', 'dd']).stdout).toMatch(/kind\s+dedup[\s\S]*chunk hash\s+blake3/);
    expect(d.json<PoolJson>(['pool', 'info', 'default'])).toMatchObject({ kind: 'local', dedup: null });
    const tiered = d.cliOk(['pool', 'create', 'tiered', '--dedup', '--hash', 'xxh128', '--tier', `file://${f('cold')}`, '--cooling', '7d']);
    expect(tiered.stdout).not.toMatch(/packs stay local/);
    expect(d.json<PoolJson>(['pool', 'info', 'tiered']).dedup).toEqual({
      hash: 'xxh128',
      tierActive: true,
      tier: { url: `file://${f('cold')}`, s3Endpoint: null, s3Region: null, coolingMs: 7 * 86_400_000 },
    });
    d.cliFails(['pool', 'create', 'x1', '--hash', 'md5'], 2, /: --hash applies to dedup pools only/, /--dedup/);
    d.cliFails(['pool', 'create', 'x1', '--dedup', '--hash', 'md5'], 2, /unknown chunk hash 'md5'/);
    d.cliFails(['pool', 'create', 'x1', '--dedup', '--cooling', '1d'], 2, /--tier/);
    d.cliFails(['pool', 'create', 'x1', '--dedup', '--tier', 's3://b/p', '--s3-region', 'eu-west-1', '--cooling', 'soon'], 2, /not a duration/);
    d.cliFails(['pool', 'create', 'x1', '--dedup', '--tier', 's3://Bad_Bucket/p', '--s3-region', 'us-east-1'], 1, /not an S3 bucket name/);
    d.cliFails(['pool', 'create', 'x1', '--dedup', '--tier', 's3://key:secret@bucket/p', '--s3-region', 'us-east-1'], 1, /carries credentials/, /AWS default chain/);
    d.cliFails(['pool', 'create', 'x1', '--dedup', '--tier', 's3://bucket/p'], 1, /--s3-region/, /--s3-endpoint/);
    d.cliFails(['pool', 'create', 'Upper', '--dedup'], 1, /lower-case/);
    const s3 = d.json<PoolJson>(['pool', 'create', 's3p', '--dedup', '--tier', 's3://bucket/some/prefix/', '--s3-endpoint', 'http://127.0.0.1:9000', '--cooling', '12h']);
    expect(s3.dedup?.tier).toEqual({ url: 's3://bucket/some/prefix', s3Endpoint: 'http://127.0.0.1:9000', s3Region: null, coolingMs: 12 * 3_600_000 });
    d.cliOk(['pool', 'delete', 'tiered']);
    // Nothing answers at the endpoint (nor are there keys): the pool is kept, unless forced.
    d.cliFails(['pool', 'delete', 's3p'], 1, /its packs in s3:\/\/bucket\/some\/prefix could not be deleted/, /pass --force to delete the pool anyway/);
    expect(d.cliOk(['pool', 'delete', 's3p', '--force']).stdout).toMatch(/^Pool 's3p' deleted; its packs in s3:\/\/bucket\/some\/prefix could not be deleted and were left there/);
    // REST: gc without a body takes the default grace; a local pool has nothing to collect.
    expect(await d.apiJson<PoolGcJson>('POST', '/v1/pools/dd/gc', undefined, 200)).toMatchObject({ pool: 'dd', graceMs: 3_600_000, bytesDeleted: 0 });
    const local = await d.api('POST', '/v1/pools/default/gc', { body: {} });
    expect(local.status).toBe(400);
    expect(await local.json()).toMatchObject({ error: { code: 'INVALID_ARGUMENT', message: expect.stringMatching(/local pool/) } });
    expect(await d.apiJson<PoolDfJson>('GET', '/v1/pools/default/df')).toMatchObject({ kind: 'local', packBytes: 0, dedupRatio: null });
  });

  it('seals a snapshot in the background; the volume and the snapshot read back over NBD', () => {
    d.cliOk(['volume', 'create', 'dd/vm', String(SIZE)]);
    d.cliOk(['volume', 'export-nbd', 'dd/vm']);
    const reference = f('vm.raw');
    expect(qemuImg(['create', '-f', 'raw', reference, String(SIZE)]).code).toBe(0);
    const cmds: string[] = [];
    for (let i = 0; i < 24; i++) cmds.push('-c', `write -P 0x${(i + 1).toString(16)} ${i * MiB + (i % 3) * 4096} ${MiB / 2 + i * 4096}`);
    cmds.push('-c', 'write -P 0x11 20M 1M', '-c', 'write -P 0x11 22M 1M', '-c', 'flush'); // equal data: one copy
    expect(qemuIo(['-f', 'raw', ...cmds, tcp('dd/vm')]).code).toBe(0);
    expect(qemuIo(['-f', 'raw', ...cmds, reference]).code).toBe(0);

    d.cliOk(['snap', 'create', 'dd/vm@s1']);
    // The export keeps serving while the seal job runs (its chain still reads the local file).
    const during = qemuCompare(tcp('dd/vm'), reference);
    expect(during.code, during.stdout + during.stderr).toBe(0);
    const seals = waitForSeals(d, 'dd');
    expect(seals.map((j) => j.state)).toEqual(['succeeded']);
    expect(seals[0]!.doneBytes).toBeGreaterThan(0);
    const manifests = path.join(d.dataDir, 'chunks', 'dd', 'layer-manifests', 'dd');
    expect(readdirSync(manifests)).toHaveLength(1);
    // The sealed layer's local file is gone; the active layer stays a local qcow2 file.
    expect(readdirSync(path.join(d.dataDir, 'pools', 'dd')).filter((n) => n.endsWith('.qcow2'))).toHaveLength(1);

    const fromVolume = qemuCompare(tcp('dd/vm'), reference);
    expect(fromVolume.code, fromVolume.stdout + fromVolume.stderr).toBe(0);
    d.cliOk(['volume', 'export-nbd', 'dd/vm@s1']);
    const fromSnap = qemuCompare(tcp('dd/vm@s1'), reference);
    expect(fromSnap.code, fromSnap.stdout + fromSnap.stderr).toBe(0);

    // Writes after the seal land in the active layer over the sealed one.
    const more = ['-c', 'write -P 0x77 1M 3M', '-c', 'write -z 4M 64k', '-c', 'flush'];
    expect(qemuIo(['-f', 'raw', ...more, tcp('dd/vm')]).code).toBe(0);
    expect(qemuIo(['-f', 'raw', ...more, reference]).code).toBe(0);
    expect(qemuCompare(tcp('dd/vm'), reference).code).toBe(0);
    const df = d.json<PoolDfJson>(['pool', 'df', 'dd']);
    expect(df).toMatchObject({ kind: 'dedup', volumeCount: 1, logicalProvisionedBytes: SIZE, remoteBytes: 0 });
    expect(df.dedupRatio).toBeGreaterThan(1); // the two equal 1 MiB runs are one copy
    expect(d.cliOk(['pool', 'df', 'dd']).stdout).toMatch(/dedup ratio\s+\d+\.\d\dx/);

    // Deleting the sealed snapshot merges it into the live volume (read through its manifest).
    d.cliOk(['volume', 'unexport-nbd', 'dd/vm@s1']);
    d.cliOk(['snap', 'create', 'dd/vm@s2']);
    waitForSeals(d, 'dd');
    // A clone of the sealed snapshot, with a sealed snapshot of its own at its bottom: flatten
    // unseals that layer to copy the parent's data into it, and seals it again.
    d.cliOk(['snap', 'protect', 'dd/vm@s2']);
    d.cliOk(['snap', 'clone', 'dd/vm@s2', 'dd/c1']);
    d.cliOk(['snap', 'create', 'dd/c1@cs']);
    waitForSeals(d, 'dd');
    d.cliOk(['volume', 'flatten', 'dd/c1']);
    expect(waitForSeals(d, 'dd').every((j) => j.state === 'succeeded')).toBe(true);
    d.cliOk(['volume', 'export-nbd', 'dd/c1']);
    const clone = qemuCompare(tcp('dd/c1'), reference);
    expect(clone.code, clone.stdout + clone.stderr).toBe(0);
    d.cliOk(['volume', 'unexport-nbd', 'dd/c1']);
    d.cliOk(['volume', 'delete', 'dd/c1', '--now', '--force']);
    d.cliOk(['snap', 'unprotect', 'dd/vm@s2']);
    d.cliOk(['snap', 'delete', 'dd/vm@s1']);
    expect(qemuCompare(tcp('dd/vm'), reference).code).toBe(0);
    d.cliOk(['snap', 'delete', 'dd/vm@s2']);
    expect(qemuCompare(tcp('dd/vm'), reference).code).toBe(0);
    expect(existsSync(manifests) ? readdirSync(manifests) : []).toHaveLength(0);
    d.cliOk(['volume', 'unexport-nbd', 'dd/vm']);
    d.cliOk(['volume', 'delete', 'dd/vm', '--now']);
  });

  it('two volumes imported from one source take one copy; deleting them and gc give the space back', () => {
    d.cliOk(['pool', 'create', 'di', '--dedup']);
    const source = f('source.raw');
    const extents = Array.from({ length: 24 }, (_, i) => ({ offset: i * MiB + (i % 2) * 65536, data: patternBytes(MiB - 65536, i + 1) }));
    const dataBytes = extents.reduce((n, e) => n + e.data.length, 0);
    const bytes = Buffer.alloc(SIZE);
    for (const e of extents) e.data.copy(bytes, e.offset);
    writeFileSync(source, bytes);
    const qcow2 = f('source.qcow2');
    expect(qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', source, qcow2]).code).toBe(0);
    // A raw import writes its base sealed (no seal job); a qcow2 one writes it locally and a
    // seal job follows.
    d.cliOk(['volume', 'import', source, 'di/a']);
    expect(waitForSeals(d, 'di')).toEqual([]);
    d.cliOk(['volume', 'import', qcow2, 'di/b']);
    // A volume deleted while its base is being sealed: the seal is stopped (or has ended) first,
    // and leaves no reference behind (the final gc below finds every pack dead).
    d.cliOk(['volume', 'import', qcow2, 'di/c']);
    d.cliOk(['volume', 'delete', 'di/c', '--now']);
    const seals = waitForSeals(d, 'di');
    expect(seals.map((j) => j.state).slice(0, 1)).toEqual(['succeeded']);
    expect(['succeeded', 'cancelled']).toContain(seals[1]?.state);

    const df = d.json<PoolDfJson>(['pool', 'df', 'di']);
    expect(df.volumeCount).toBe(2);
    expect(df.physicalBytes).toBeGreaterThan(dataBytes * 0.9);
    expect(df.physicalBytes).toBeLessThan(dataBytes * 1.1);
    expect(df.logicalAllocatedBytes).toBeGreaterThan(dataBytes * 1.9);
    expect(df.dedupRatio).toBeGreaterThan(1.9);
    for (const name of ['a', 'b']) {
      d.cliOk(['volume', 'export-nbd', `di/${name}`]);
      const r = qemuCompare(tcp(`di/${name}`), source);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      d.cliOk(['volume', 'unexport-nbd', `di/${name}`]);
    }

    const chunks = path.join(d.dataDir, 'chunks', 'di');
    expect(folderBytes(chunks)).toBeGreaterThan(dataBytes * 0.9);
    d.cliOk(['volume', 'delete', 'di/a', '--now']);
    d.cliOk(['volume', 'delete', 'di/b', '--now']);
    const gc = d.json<PoolGcJson>(['pool', 'gc', 'di', '--grace', '0']);
    expect(gc.bytesDeleted).toBeGreaterThan(dataBytes * 0.9);
    expect(d.json<JobJson>(['job', 'info', gc.jobId])).toMatchObject({ kind: 'gc', state: 'succeeded' });
    const after = d.json<PoolDfJson>(['pool', 'df', 'di']);
    expect(after).toMatchObject({ packBytes: 0, uniqueChunkCount: 0, physicalBytes: 0 });
    expect(folderBytes(chunks)).toBeLessThan(64 * 1024);
    d.cliOk(['pool', 'delete', 'di']);
  });
});

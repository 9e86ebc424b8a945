/**
 * A damaged qcow2 upload is the uploader's error, not the pool's. Through the real daemon and CLI:
 * importing an image with a bad magic, an L1 table or L1 entry past the end of the file, a file cut
 * short (in its data, in its L2 table) or an L2 entry past the end is refused with exit status 1
 * (CLI) / 422 INVALID_IMAGE (REST), and a message with the parser's reason and what to do; the
 * daemon logs each refusal once, at INFO, without a stack; nothing is left behind (no volume, no
 * file in the pool's folder); and the daemon goes on serving. The same damage in the pool's own
 * layer stays what it was: CORRUPT, a 500 and an alarm in the log.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qemuImg, requireTool } from '../support/tools.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { BASE_DATA_BYTES, BASE_PATTERN, DAMAGES, makeBaseImage, makeDamagedImage, readLayout, type Damage } from '../oracle/damaged-images.js';
import { assertBuilt, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const POOL = 'uploads';

/** Each damage, and what the refusal must say (the parser's reason). */
const REFUSED: [Damage, RegExp][] = [
  [DAMAGES.badMagic, /bad magic \(not a qcow2 image\)/],
  [DAMAGES.l1TablePastEof, /L1 table at 0x10000000 \(8 bytes\) runs past the end of the file \(\d+ bytes\)/],
  [DAMAGES.l1EntryPastEof, /L1 entry 0 \(L2 table at 0x10000000\) points past the end of the file/],
  [DAMAGES.l2EntryPastEof, /L2 entry at 0x[0-9a-f]+ points past the end of the file \(data cluster at 0x10000000;/],
  [DAMAGES.truncatedInData, /L2 entry at 0x[0-9a-f]+ points past the end of the file \(data cluster at 0x[0-9a-f]+;/],
  [DAMAGES.truncatedInL2, /L1 entry 0 \(L2 table at 0x[0-9a-f]+\) points past the end of the file/],
];

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('import of a damaged qcow2 image', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  let base: string;
  const poolFolder = () => path.join(d.dataDir, 'pools', POOL);

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    d = await startDaemon(path.join(tmp.path, 'data'));
    d.cliOk(['pool', 'create', POOL]);
    base = path.join(tmp.path, 'base.qcow2');
    makeBaseImage(base);
  });
  afterAll(async () => {
    if (d) expect((await d.stop()).code).toBe(0);
    tmp?.cleanup();
  });

  it('the CLI exits 1 with the reason and what to do; nothing is left; the log has one INFO line each, no stack', () => {
    for (const [i, [damage, reason]] of REFUSED.entries()) {
      const file = path.join(tmp.path, `damaged-${i}.qcow2`);
      makeDamagedImage(base, file, damage);
      const r = d.cliFails(
        ['volume', 'import', file, `${POOL}/damaged-${i}`, '--format', 'qcow2'],
        1,
        /the uploaded qcow2 image is damaged: /,
        reason,
        /check the source with 'qemu-img check' or 'strata img check'/,
        /\[INVALID_IMAGE\]/,
      );
      expect(r.stderr, damage.name).not.toMatch(/\.tmp-import|daemon's log|layer's metadata/);
    }
    expect(d.json<unknown[]>(['volume', 'list', POOL])).toEqual([]);
    expect(readdirSync(poolFolder())).toEqual([]);
    const log = d.logs();
    expect(log).not.toMatch(/\bERROR\b/);
    expect(log).not.toMatch(/^\s+at /m);
    const refusals = log.split('\n').filter((line) => /\/content\?format=qcow2/.test(line));
    expect(refusals).toHaveLength(REFUSED.length);
    for (const line of refusals) expect(line).toMatch(/ INFO .*status=422/);
  });

  it('the REST route answers 422 INVALID_IMAGE with the reason', async () => {
    const file = path.join(tmp.path, 'damaged-rest.qcow2');
    makeDamagedImage(base, file, DAMAGES.l2EntryPastEof);
    const res = await d.api('PUT', `/v1/pools/${POOL}/volumes/rest-upload/content?format=qcow2`, {
      raw: readFileSync(file),
      headers: { 'content-type': 'application/octet-stream' },
    });
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect({ status: res.status, code: body.error.code }).toEqual({ status: 422, code: 'INVALID_IMAGE' });
    expect(body.error.message).toMatch(/^the uploaded qcow2 image is damaged: L2 entry at 0x[0-9a-f]+ points past the end of the file/);
    expect(readdirSync(poolFolder())).toEqual([]);
  });

  it('the daemon goes on serving: an intact image imports and reads back as qemu-img reads it', () => {
    d.cliOk(['volume', 'import', base, `${POOL}/intact`, '--format', 'qcow2']);
    const exported = d.cliBytes(['volume', 'export', `${POOL}/intact`, '-']);
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stdout.subarray(0, BASE_DATA_BYTES).every((b) => b === BASE_PATTERN)).toBe(true);
    expect(exported.stdout.subarray(BASE_DATA_BYTES).every((b) => b === 0)).toBe(true);
  });

  it('damage the data does not depend on (a refcount table entry past the end) does not stop an import', () => {
    // Import reads data through the L1 and L2 tables only; qemu-img convert reads this image too.
    const file = path.join(tmp.path, 'refcounts-damaged.qcow2');
    makeDamagedImage(base, file, DAMAGES.refcountEntryPastEof);
    const raw = path.join(tmp.path, 'refcounts-damaged.raw');
    expect(qemuImg(['convert', '-O', 'raw', file, raw]).code).toBe(0);
    d.cliOk(['volume', 'import', file, `${POOL}/refcounts-damaged`, '--format', 'qcow2']);
    const exported = d.cliBytes(['volume', 'export', `${POOL}/refcounts-damaged`, '-']);
    expect(exported.code, exported.stderr).toBe(0);
    expect(exported.stdout.equals(readFileSync(raw))).toBe(true);
  });

  it("the same damage in the pool's own layer stays CORRUPT: a 500 and an ERROR in the log", async () => {
    d.cliOk(['pool', 'create', 'own']);
    d.cliOk(['volume', 'import', base, 'own/vol', '--format', 'qcow2']);
    const [layer] = readdirSync(path.join(d.dataDir, 'pools', 'own'));
    const layerFile = path.join(d.dataDir, 'pools', 'own', layer!);
    DAMAGES.l2EntryPastEof.apply(layerFile, readLayout(layerFile));
    const res = await d.api('GET', '/v1/pools/own/volumes/vol/content?format=qcow2');
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect({ status: res.status, code: body.error.code }).toEqual({ status: 500, code: 'CORRUPT' });
    expect(d.logs()).toMatch(/ ERROR .*request failed.*code=CORRUPT/);
  });
});

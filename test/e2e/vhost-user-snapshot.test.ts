/**
 * A snapshot attached over vhost-user-blk through the daemon (`strata volume attach VOL@SNAP`),
 * driven by the TypeScript front-end (test/vhost-user/frontend.ts, QEMU's role without a VM): the
 * device offers VIRTIO_BLK_F_RO and no DISCARD / WRITE_ZEROES; reads return the snapshot's bytes
 * while the volume's own attachment rewrites the volume; writes, discards and write-zeroes are
 * answered IOERR; the snapshot cannot be deleted while attached (BUSY naming the detach); the
 * attachment comes back after a daemon restart; a volume attached with --read-only is read-only
 * the same way.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir } from '../support/tmp.js';
import { BlkFeature, BlkStatus, BlkStatusError, BlkType, VhostUserFrontend, bit } from '../vhost-user/frontend.js';
import { assertBuilt, startDaemon, type Daemon } from './harness.js';
import path from 'node:path';

assertBuilt();

const MiB = 1 << 20;
const SECTOR = 512;

function filled(bytes: number, value: number): Uint8Array {
  return new Uint8Array(bytes).fill(value);
}

/** Connects to a vhost-user socket the daemon may still be (re)creating. */
async function connect(socketPath: string): Promise<VhostUserFrontend> {
  for (let i = 0; ; i++) {
    try {
      return await VhostUserFrontend.connect(socketPath);
    } catch (err) {
      if (i >= 100) throw err;
      await sleep(50);
    }
  }
}

/** Fills the first MiB with `value`, 64 KiB per request (the front-end's request limit is 128 KiB). */
async function fillFirstMiB(fe: VhostUserFrontend, value: number): Promise<void> {
  for (let at = 0; at < MiB; at += 64 * 1024) await fe.write(at / SECTOR, filled(64 * 1024, value));
  await fe.flush();
}

async function expectIoError(p: Promise<unknown>): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BlkStatusError);
  expect((err as BlkStatusError).status).toBe(BlkStatus.IOERR);
}

/** Every request that would change the disk fails with IOERR; the front-end saw VIRTIO_BLK_F_RO. */
async function expectReadOnly(fe: VhostUserFrontend): Promise<void> {
  expect(fe.backendFeatures & bit(BlkFeature.RO)).toBe(bit(BlkFeature.RO));
  expect(fe.backendFeatures & bit(BlkFeature.DISCARD)).toBe(0n);
  expect(fe.backendFeatures & bit(BlkFeature.WRITE_ZEROES)).toBe(0n);
  await expectIoError(fe.write(0, filled(4096, 0xee)));
  const discard = await fe.segmentsStatus(BlkType.DISCARD, [{ sector: 0, sectors: 8 }]);
  expect(discard.status).toBe(BlkStatus.IOERR);
  const zeroes = await fe.segmentsStatus(BlkType.WRITE_ZEROES, [{ sector: 0, sectors: 8 }], true);
  expect(zeroes.status).toBe(BlkStatus.IOERR);
  // Flush has nothing to do on a read-only disk, and is not an error.
  await fe.flush();
}

describe('vhost-user-blk attach of a snapshot (read-only), through the daemon', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);
  const open: VhostUserFrontend[] = [];

  beforeAll(async () => {
    tmp = makeTempDir(); // not /dev/shm: the sockets' paths stay short
    d = await startDaemon(f('data'));
  });
  afterAll(async () => {
    for (const fe of open) fe.close();
    await d?.stop();
    tmp?.cleanup();
  });

  it('reads the snapshot while the volume is rewritten, refuses writes, blocks the snapshot delete and survives a restart', async () => {
    d.cliOk(['volume', 'create', 'vm', '4M']);
    d.cliOk(['volume', 'attach', 'vm', '--vhost-user', f('vm.sock')]);
    const head = await connect(f('vm.sock'));
    open.push(head);
    await fillFirstMiB(head, 0xaa);
    d.cliOk(['snap', 'create', 'vm@gold']);

    const attached = d.json<{ id: string; snapshot: string | null; readOnly: boolean; socketPath: string }>(['volume', 'attach', 'vm@gold', '--vhost-user', f('gold.sock')]);
    expect(attached).toMatchObject({ snapshot: 'gold', readOnly: true, socketPath: f('gold.sock') });
    // Attached once per target: the same snapshot again is BUSY, naming its detach.
    d.cliFails(['volume', 'attach', 'vm@gold', '--vhost-user', f('gold2.sock')], 4, /already attached/, /strata volume detach default\/vm@gold/);
    const table = d.cliOk(['volume', 'exports']).stdout;
    expect(table).toMatch(/vhost-user\s+default\/vm@gold\s+ro\b/);
    expect(table).toMatch(/vhost-user\s+default\/vm\s+rw\b/);

    let snap = await connect(f('gold.sock'));
    open.push(snap);
    // The serial is the snapshot's id, not the volume's.
    const snapId = d.json<{ id: string }>(['snap', 'info', 'vm@gold']).id;
    expect(await snap.getId()).toBe(snapId);
    await expectReadOnly(snap);
    // The volume is rewritten through its own attachment; the snapshot keeps its bytes.
    await fillFirstMiB(head, 0x55);
    expect(Buffer.from(await head.read(0, 64 * 1024)).every((b) => b === 0x55)).toBe(true);
    expect(Buffer.from(await snap.read(0, 64 * 1024)).every((b) => b === 0xaa)).toBe(true);
    expect(Buffer.from(await snap.read((MiB - 64 * 1024) / SECTOR, 64 * 1024)).every((b) => b === 0xaa)).toBe(true);
    expect(Buffer.from(await snap.read(MiB / SECTOR, 64 * 1024)).every((b) => b === 0)).toBe(true);

    d.cliFails(['snap', 'delete', 'vm@gold'], 4, /is exported/, /strata volume detach default\/vm@gold/);
    d.cliFails(['snap', 'rename', 'vm@gold', 'silver'], 4, /is exported/, /strata volume detach default\/vm@gold/);

    // A restart: both attachments come back; the front-end reconnects and still sees the snapshot.
    head.close();
    snap.close();
    await d.stop();
    d = await startDaemon(f('data'));
    snap = await connect(f('gold.sock'));
    open.push(snap);
    await expectReadOnly(snap);
    expect(Buffer.from(await snap.read(0, 64 * 1024)).every((b) => b === 0xaa)).toBe(true);
    snap.close();

    // Detaching the snapshot leaves the volume's attachment; then the snapshot can go.
    d.cliOk(['volume', 'detach', 'vm@gold']);
    d.cliFails(['volume', 'detach', 'vm@gold'], 3, /not attached/);
    const left = d.json<{ snapshot: string | null }[]>(['volume', 'exports']);
    expect(left.map((e) => e.snapshot)).toEqual([null]);
    d.cliOk(['snap', 'delete', 'vm@gold']);
    d.cliOk(['volume', 'detach', 'vm']);
  });

  it('a volume attached --read-only offers VIRTIO_BLK_F_RO and answers writes IOERR', async () => {
    d.cliOk(['volume', 'create', 'ro', '1M']);
    d.cliOk(['volume', 'attach', 'ro', '--vhost-user', f('ro.sock'), '--read-only']);
    const fe = await connect(f('ro.sock'));
    open.push(fe);
    await expectReadOnly(fe);
    expect(Buffer.from(await fe.read(0, 4096)).every((b) => b === 0)).toBe(true);
    fe.close();
    d.cliOk(['volume', 'detach', 'ro']);
  });

  it('the REST API takes a snapshot for type vhost-user (read-only whatever readOnly says)', async () => {
    d.cliOk(['volume', 'create', 'api', '1M']);
    d.cliOk(['snap', 'create', 'api@s']);
    const created = await d.apiJson<{ id: string; snapshot: string; readOnly: boolean }>(
      'POST',
      '/v1/exports',
      { type: 'vhost-user', pool: 'default', volume: 'api', snapshot: 's', readOnly: false, socketPath: f('api.sock') },
      201,
    );
    expect(created).toMatchObject({ snapshot: 's', readOnly: true });
    const missing = await d.api('POST', '/v1/exports', { body: { type: 'vhost-user', pool: 'default', volume: 'api', snapshot: 'nope', socketPath: f('api2.sock') } });
    expect(missing.status).toBe(404);
    await d.apiJson('DELETE', `/v1/exports/${created.id}`, undefined, 204);
  });
});

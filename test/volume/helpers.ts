/**
 * Helpers for the volume-layer suites: a service over a temp data folder, guest writes through the
 * qcow2 engine (the way an export would write), and a model of what every volume and snapshot must
 * read, checked with qemu-img as the oracle:
 *
 *   - contents:   `qemu-img compare` of each volume's active layer and each snapshot's layer (through
 *                 its chain) against a raw file holding the expected bytes;
 *   - metadata:   `qemu-img check` clean on every layer file;
 *   - chains:     `qemu-img info --backing-chain` on the active layer lists the layers the catalog says;
 *   - no orphans: the pool folders hold exactly the files the catalog references.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect, onTestFinished } from 'vitest';
import type { CatalogStore } from '../../src/core/catalog-store.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { LocalVolumeService, type LocalVolumeServiceOptions } from '../../src/volume/index.js';
import { openImage } from '../../src/cli/img/open-image.js';
import { qemuImg } from '../support/tools.js';
import { shmTempDir } from '../support/tmp.js';

export { KiB, MiB, pattern } from './patterns.js';
import { KiB, pattern } from './patterns.js';

export interface Env {
  dir: string;
  /** The CatalogStore the service keeps its tables in (env.service.catalog reads them typed). */
  catalog: CatalogStore;
  service: LocalVolumeService;
  /** Closes and reopens catalog and service (a clean restart), running recover(). */
  restart(options?: LocalVolumeServiceOptions): Promise<void>;
}

/**
 * A service over `dir`: its catalog a LevelCatalogStore in `<dir>/catalog`, or with `catalog:
 * 'memory'` a MemoryCatalogStore that restarts keep (the process "restarts", the store survives).
 */
export async function makeEnv(options: LocalVolumeServiceOptions = {}, dir: string = shmTempDir(), catalog: 'level' | 'memory' = 'level'): Promise<Env> {
  const memory = catalog === 'memory' ? new MemoryCatalogStore() : undefined;
  const openStore = async (): Promise<CatalogStore> => memory ?? (await LevelCatalogStore.open(path.join(dir, 'catalog')));
  const env = { dir, catalog: await openStore() } as Env;
  env.service = new LocalVolumeService(env.catalog, dir, options);
  await env.service.recover();
  env.restart = async (next = options) => {
    await env.service.close();
    if (memory === undefined) await env.catalog.close();
    env.catalog = await openStore();
    env.service = new LocalVolumeService(env.catalog, dir, next);
    const report = await env.service.recover();
    expect(report.problems).toEqual([]);
  };
  onTestFinished(async () => {
    await env.service.close();
    await env.catalog.close();
  });
  return env;
}

/** Writes into a volume's active layer through the engine (as an export would). */
export async function writeVolume(env: Env, pool: string, volume: string, offset: number, data: Uint8Array): Promise<void> {
  const info = await env.service.volumeInfo(pool, volume);
  const opened = await openImage(info.location!, { readOnly: false });
  try {
    await opened.image.write(offset, data);
    await opened.image.flush();
  } finally {
    await opened.close();
  }
}

export async function zeroVolume(env: Env, pool: string, volume: string, offset: number, length: number): Promise<void> {
  const info = await env.service.volumeInfo(pool, volume);
  const opened = await openImage(info.location!, { readOnly: false });
  try {
    await opened.image.writeZeroes(offset, length, { mayUnmap: true });
  } finally {
    await opened.close();
  }
}

export async function collect(stream: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const part of stream) {
    parts.push(part);
    total += part.length;
  }
  const out = new Uint8Array(total);
  let pos = 0;
  for (const part of parts) {
    out.set(part, pos);
    pos += part.length;
  }
  return out;
}

export async function* chunksOf(data: Uint8Array, chunkBytes = 300 * KiB): AsyncGenerator<Uint8Array> {
  for (let pos = 0; pos < data.length; pos += chunkBytes) yield data.slice(pos, Math.min(data.length, pos + chunkBytes));
}

/** Reads what a volume (or one of its snapshots) reads, through the service's raw export. */
export async function readVolume(env: Env, pool: string, volume: string, snapshot?: string): Promise<Uint8Array> {
  const { stream } = await env.service.exportVolume(pool, volume, { format: 'raw', ...(snapshot === undefined ? {} : { snapshot }) });
  return collect(stream);
}

export { expectCode } from '../support/expect-error.js';

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

export function expectBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length === expected.length && Buffer.from(actual).equals(Buffer.from(expected))) return;
  const at = firstDifference(actual, expected);
  throw new Error(`${what}: differs at byte ${at} (actual length ${actual.length}, expected ${expected.length})`);
}

/** qemu-img compare of a qcow2 layer (through its chain) against expected bytes. */
export function qemuCompare(layerPath: string, expected: Uint8Array, scratchDir: string, what: string): void {
  const raw = path.join(scratchDir, `expected-${process.pid}-${Math.random().toString(36).slice(2)}.raw`);
  fs.writeFileSync(raw, expected);
  try {
    const result = qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', layerPath, raw]);
    if (result.code !== 0) throw new Error(`qemu-img compare ${what} (${layerPath}): exit ${result.code}\n${result.stdout}${result.stderr}`);
    const info = JSON.parse(qemuImg(['info', '--output=json', '-U', layerPath]).stdout) as { 'virtual-size': number };
    expect(info['virtual-size'], `${what}: virtual size`).toBe(expected.length);
  } finally {
    fs.rmSync(raw, { force: true });
  }
}

/** Every file in the pool folders, as "pool/file". */
export function poolFiles(dataDir: string): string[] {
  const pools = path.join(dataDir, 'pools');
  const out: string[] = [];
  for (const pool of fs.existsSync(pools) ? fs.readdirSync(pools) : []) {
    for (const file of fs.readdirSync(path.join(pools, pool))) out.push(`${pool}/${file}`);
  }
  return out.sort();
}

/** qemu-img check's exit status when it found leaked clusters and nothing worse. */
const QEMU_IMG_CHECK_LEAKS_ONLY = 3;

/**
 * Catalog and files agree: every layer has its file, every file is a layer's, no intent is left,
 * and qemu-img check finds nothing wrong in any layer. `leaksAllowed` accepts leaked clusters (not
 * corruption): a process killed inside an allocating guest write leaks the cluster it had counted
 * and not yet mapped, as any qcow2 writer does; they waste space and harm no data.
 */
export async function expectConsistent(env: Pick<Env, 'dir' | 'service'>, options: { leaksAllowed?: boolean } = {}): Promise<void> {
  const layers = await env.service.catalog.layers.all();
  expect(poolFiles(env.dir)).toEqual(layers.map((l) => `${l.pool}/${l.fileName}`).sort());
  expect(await env.service.catalog.intents.all()).toEqual([]);
  expect(await env.service.catalog.reservations.all()).toEqual([]);
  for (const layer of layers) {
    const file = path.join(env.dir, 'pools', layer.pool, layer.fileName);
    const check = qemuImg(['check', '-U', file]);
    if (check.code === QEMU_IMG_CHECK_LEAKS_ONLY && options.leaksAllowed === true) continue;
    if (check.code !== 0) throw new Error(`qemu-img check ${file}: exit ${check.code}\n${check.stdout}${check.stderr}`);
  }
}

/**
 * The model: what each "pool/volume" and "pool/volume@snapshot" must read. Operations go through
 * the service and update the model the way the layer model says they must.
 */
export class Model {
  readonly contents = new Map<string, Uint8Array>();
  private seed = 1;

  constructor(readonly env: Env) {}

  get service(): LocalVolumeService {
    return this.env.service;
  }

  key(pool: string, volume: string, snapshot?: string): string {
    return snapshot === undefined ? `${pool}/${volume}` : `${pool}/${volume}@${snapshot}`;
  }

  expected(pool: string, volume: string, snapshot?: string): Uint8Array {
    const value = this.contents.get(this.key(pool, volume, snapshot));
    if (!value) throw new Error(`model has no ${this.key(pool, volume, snapshot)}`);
    return value;
  }

  async createVolume(pool: string, volume: string, sizeBytes: number): Promise<void> {
    await this.service.createVolume(pool, volume, sizeBytes);
    this.contents.set(this.key(pool, volume), new Uint8Array(sizeBytes));
  }

  async write(pool: string, volume: string, offset: number, length: number): Promise<void> {
    const data = pattern(length, this.seed++);
    await writeVolume(this.env, pool, volume, offset, data);
    this.expected(pool, volume).set(data, offset);
  }

  async zero(pool: string, volume: string, offset: number, length: number): Promise<void> {
    await zeroVolume(this.env, pool, volume, offset, length);
    this.expected(pool, volume).fill(0, offset, offset + length);
  }

  async snapshot(pool: string, volume: string, snapshot: string): Promise<void> {
    await this.service.createSnapshot(pool, volume, snapshot);
    this.contents.set(this.key(pool, volume, snapshot), this.expected(pool, volume).slice());
  }

  async rollback(pool: string, volume: string, snapshot: string): Promise<void> {
    await this.service.rollbackSnapshot(pool, volume, snapshot);
    this.contents.set(this.key(pool, volume), this.expected(pool, volume, snapshot).slice());
  }

  async deleteSnapshot(pool: string, volume: string, snapshot: string): Promise<void> {
    await this.service.deleteSnapshot(pool, volume, snapshot);
    this.contents.delete(this.key(pool, volume, snapshot));
  }

  async clone(pool: string, volume: string, snapshot: string, destPool: string, dest: string): Promise<void> {
    await this.service.cloneSnapshot(pool, volume, snapshot, destPool, dest);
    this.contents.set(this.key(destPool, dest), this.expected(pool, volume, snapshot).slice());
  }

  async resize(pool: string, volume: string, sizeBytes: number): Promise<void> {
    await this.service.resizeVolume(pool, volume, sizeBytes, { allowShrink: true });
    const old = this.expected(pool, volume);
    const next = new Uint8Array(sizeBytes);
    next.set(old.subarray(0, Math.min(old.length, sizeBytes)));
    this.contents.set(this.key(pool, volume), next);
  }

  async deleteVolume(pool: string, volume: string, force = false): Promise<void> {
    await this.service.deleteVolume(pool, volume, { force });
    for (const key of [...this.contents.keys()]) {
      if (key === this.key(pool, volume) || key.startsWith(`${this.key(pool, volume)}@`)) this.contents.delete(key);
    }
  }

  /** Every volume and snapshot reads what the model says (service export and qemu-img compare), and all is consistent. */
  async verify(options: { qemu?: boolean } = {}): Promise<void> {
    const qemu = options.qemu ?? true;
    const scratch = path.join(this.env.dir, 'scratch');
    fs.mkdirSync(scratch, { recursive: true });
    const actualKeys: string[] = [];
    for (const pool of await this.service.listPools()) {
      for (const vol of await this.service.listVolumes(pool.name)) {
        actualKeys.push(this.key(pool.name, vol.name));
        for (const snap of await this.service.listSnapshots(pool.name, vol.name)) actualKeys.push(this.key(pool.name, vol.name, snap.name));
      }
    }
    expect(actualKeys.sort()).toEqual([...this.contents.keys()].sort());
    for (const [key, expected] of this.contents) {
      const [poolVol, snap] = key.split('@') as [string, string | undefined];
      const [pool, vol] = poolVol.split('/') as [string, string];
      expectBytes(await readVolume(this.env, pool, vol, snap), expected, `${key} (service export)`);
      if (!qemu) continue;
      const layerPath =
        snap === undefined ? (await this.service.volumeInfo(pool, vol)).location! : (await this.service.snapshotInfo(pool, vol, snap)).location!;
      qemuCompare(layerPath, expected, scratch, key);
    }
    fs.rmSync(scratch, { recursive: true, force: true });
    if (qemu) await expectConsistent(this.env);
  }

  /** `qemu-img info --backing-chain` on the volume's active layer lists the chain the service reports. */
  async expectChain(pool: string, volume: string, layerFiles: string[]): Promise<void> {
    const info = await this.service.volumeInfo(pool, volume);
    const chain = JSON.parse(qemuImg(['info', '--backing-chain', '--output=json', '-U', info.location!]).stdout) as { filename: string }[];
    expect(chain.map((c) => path.resolve(c.filename))).toEqual(layerFiles.map((f) => path.resolve(f)));
    expect(info.chainDepth).toBe(layerFiles.length);
  }
}

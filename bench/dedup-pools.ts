/** The pools and volumes of the dedup benches, driven through the CLI of a bench daemon. */
import { join } from 'node:path';
import { fioNbd } from './fio-nbd.js';
import { strataCli, waitForJobs, type StrataDaemon } from './strata-daemon.js';

/** The side of a cell that stores its data in a dedup pool, and the local-pool side it is compared with. */
export const DEDUP = 'dedup';
export const LOCAL = 'local';
/** A second local pool: the active cell's control side (the same code as LOCAL, so their ratio is noise). */
export const CONTROL = 'local-b';

/** Creates the local pools `local` and `local-b` and the dedup pool `dedup` (BLAKE3, no tier). */
export function createBenchPools(d: StrataDaemon): void {
  strataCli(d, ['pool', 'create', LOCAL]);
  strataCli(d, ['pool', 'create', CONTROL]);
  strataCli(d, ['pool', 'create', DEDUP, '--dedup']);
}

/** Seconds from the start of `strata volume import` until the daemon has no job left (its seal done). */
export async function timeImport(d: StrataDaemon, source: string, target: string): Promise<{ importSeconds: number; sealedSeconds: number }> {
  const start = process.hrtime.bigint();
  strataCli(d, ['volume', 'import', source, target, '--no-progress']);
  const importSeconds = Number(process.hrtime.bigint() - start) / 1e9;
  await waitForJobs(d);
  return { importSeconds, sealedSeconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

/** Exports `target` (POOL/VOLUME[@SNAPSHOT]) over the daemon's unix socket; answers the NBD URI. */
export function exportNbd(d: StrataDaemon, target: string): string {
  strataCli(d, ['volume', 'export-nbd', target]);
  return `nbd+unix:///${target}?socket=${join(d.dataDir, 'nbd.sock')}`;
}

/** Writes the first `size` of an export with 1 MiB sequential writes (so reads find data). */
export function fillExport(uri: string, size: string): void {
  fioNbd(uri, { rw: 'write', bs: '1M', iodepth: 8 }, undefined, size);
}

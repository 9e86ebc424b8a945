/**
 * The live flatten crash test's child process (see live-flatten-crash.test.ts): makes a clone of a
 * 96 MiB volume, opens it as an export would (openDevice), starts a flatten and writes through the
 * device until it is killed: each write (then a flush) journaled "begin" before it is sent and
 * "end" once the flush is acknowledged. After each acknowledged write it prints
 * "progress <doneBytes> <totalBytes> <state>" of the flatten job, so the parent can kill it
 * mid-copy or after the flatten.
 *
 * argv: <dataDir> <journal file>
 */
import fs from 'node:fs';
import path from 'node:path';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { liveFlattenWrite, LIVE_FLATTEN_SIZE, liveFlattenParent } from './live-flatten-data.js';

const [dataDir, journalPath] = process.argv.slice(2);
if (!dataDir || !journalPath) throw new Error('usage: live-flatten-crash-child <dataDir> <journal>');

const catalog = await LevelCatalogStore.open(path.join(dataDir, 'catalog'));
const service = new LocalVolumeService(catalog, dataDir);
await service.recover();
await service.createPool('p');
await service.createVolume('p', 'v', LIVE_FLATTEN_SIZE);
const parent = await service.openDevice('p', 'v');
await parent.write(0, liveFlattenParent());
await parent.flush();
await parent.close();
await service.createSnapshot('p', 'v', 'gold');
await service.protectSnapshot('p', 'v', 'gold');
await service.cloneSnapshot('p', 'v', 'gold', 'p', 'c');

const journal = fs.openSync(journalPath, 'a');
const device = await service.openDevice('p', 'c');
const job = await service.flattenVolume('p', 'c');
for (let i = 0; ; i++) {
  const { offset, data } = liveFlattenWrite(i);
  fs.writeSync(journal, `${JSON.stringify({ i, phase: 'begin' })}\n`);
  await device.write(offset, data);
  await device.flush();
  fs.writeSync(journal, `${JSON.stringify({ i, phase: 'end' })}\n`);
  const info = await service.jobInfo(job.id);
  process.stdout.write(`progress ${info.doneBytes} ${info.totalBytes} ${info.state}\n`);
  await new Promise((resolve) => setImmediate(resolve));
}

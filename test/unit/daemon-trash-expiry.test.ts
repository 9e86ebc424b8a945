/**
 * The daemon's trash timer (src/daemon/trash-expiry.ts) over a real LocalVolumeService whose clock
 * the test moves: start() purges what has expired, the timer purges what expires later, each
 * purge is logged, a refusal once; and the trashCheckIntervalMs setting (flag, environment, file).
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DEFAULT_TRASH_CHECK_INTERVAL_MS, loadConfig } from '../../src/daemon/config.js';
import { createLogger } from '../../src/daemon/logger.js';
import { TrashExpiry } from '../../src/daemon/trash-expiry.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { shmTempDir, tempDir } from '../support/tmp.js';

const MiB = 1 << 20;

interface LogLine {
  msg: string;
  id?: string;
  reason?: string;
}

/** A JSON logger whose lines the test reads, and can await. */
function capturedLogger() {
  const lines: LogLine[] = [];
  const waiters: { match: (l: LogLine) => boolean; resolve: () => void }[] = [];
  const logger = createLogger({
    format: 'json',
    level: 'info',
    write: (text) => {
      const line = JSON.parse(text) as LogLine;
      lines.push(line);
      for (const w of waiters.splice(0)) {
        if (w.match(line)) w.resolve();
        else waiters.push(w);
      }
    },
  });
  const next = (match: (l: LogLine) => boolean) => new Promise<void>((resolve) => waiters.push({ match, resolve }));
  return { logger, lines, next };
}

describe('the daemon trash timer', () => {
  it('catches up at start, then purges on its timer what expires later; logs each purge, a refusal once', async () => {
    const clock = { ms: Date.parse('2030-06-01T00:00:00Z') };
    const catalog = new MemoryCatalogStore();
    const service = new LocalVolumeService(catalog, shmTempDir(), { clock: () => clock.ms });
    await service.recover();
    const { logger, lines, next } = capturedLogger();
    const expiry = new TrashExpiry({ service, logger, intervalMs: 10, batchSize: 2 });
    onTestFinished(async () => {
      await expiry.stop();
      await service.close();
      await catalog.close();
    });
    await service.createPool('p');
    const ids: string[] = [];
    for (const name of ['a', 'b', 'c', 'd', 'e']) {
      await service.createVolume('p', name, MiB);
      ids.push((await service.trashVolume('p', name, { expiresInMs: name === 'e' ? 60_000 : 1000 })).id);
    }
    // 'k' expired too, but a clone of its snapshot keeps it.
    await service.createVolume('p', 'k', MiB);
    await service.createSnapshot('p', 'k', 's');
    await service.protectSnapshot('p', 'k', 's');
    await service.cloneSnapshot('p', 'k', 's', 'p', 'k-clone');
    const kept = (await service.trashVolume('p', 'k', { expiresInMs: 0 })).id;
    clock.ms += 1000;

    await expiry.start(); // passes of 2 until every expired entry was looked at
    const purgedIds = () => lines.filter((l) => l.msg === 'purged an expired volume from the trash').map((l) => l.id);
    expect(purgedIds().sort()).toEqual(ids.slice(0, 4).sort());
    expect(lines.filter((l) => l.msg.startsWith('cannot purge')).map((l) => [l.id, l.reason])).toEqual([[kept, expect.stringMatching(/k-clone/)]]);
    expect((await service.listTrash('p')).map((e) => e.id).sort()).toEqual([ids[4], kept].sort());

    const purgedE = next((l) => l.id === ids[4] && l.msg.startsWith('purged'));
    clock.ms += 60_000;
    await purgedE;
    expect((await service.listTrash('p')).map((e) => e.id)).toEqual([kept]);
    expect(lines.filter((l) => l.msg.startsWith('cannot purge'))).toHaveLength(1);
  });

  it('trashCheckIntervalMs: default, flag over environment over file, bad values named', () => {
    const dir = tempDir();
    expect(loadConfig({ dataDir: dir }, {}, dir).trashCheckIntervalMs).toBe(DEFAULT_TRASH_CHECK_INTERVAL_MS);
    writeFileSync(path.join(dir, 'strata.json'), JSON.stringify({ trashCheckIntervalMs: 500 }));
    expect(loadConfig({ dataDir: dir }, {}, dir).trashCheckIntervalMs).toBe(500);
    expect(loadConfig({ dataDir: dir }, { STRATA_TRASH_CHECK_INTERVAL_MS: '250' }, dir).trashCheckIntervalMs).toBe(250);
    expect(loadConfig({ dataDir: dir, trashCheckIntervalMs: '100' }, { STRATA_TRASH_CHECK_INTERVAL_MS: '250' }, dir).trashCheckIntervalMs).toBe(100);
    for (const bad of ['5', '-1', '1.5', 'soon']) {
      expect(() => loadConfig({ dataDir: dir, trashCheckIntervalMs: bad }, {}, dir)).toThrow(/--trash-check-interval-ms: the trash check interval must be a whole number of milliseconds, at least 10/);
    }
  });
});

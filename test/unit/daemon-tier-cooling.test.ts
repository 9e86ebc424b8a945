/**
 * The daemon's cooling timer (src/daemon/tier-cooling.ts) over a real pool tier
 * (src/store/pool-tier.ts): a LocalChunkStore of packs and manifests, a file:// cold tier in
 * another folder. Each pass moves at most its bound of cooled packs (verified cold, the local
 * copy deleted), logs what moved, and never touches the manifests; reads still find every pack.
 * An S3 tier whose server does not answer opens anyway and reports the failure. Also the
 * tierCoolingIntervalMs setting.
 */
import { existsSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DEFAULT_TIER_COOLING_INTERVAL_MS, loadConfig } from '../../src/daemon/config.js';
import { createLogger } from '../../src/daemon/logger.js';
import { TIER_SKIPPED_REMINDER_MS, TierCooling } from '../../src/daemon/tier-cooling.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { openPoolTier, type PoolTier } from '../../src/store/pool-tier.js';
import { tempDir } from '../support/tmp.js';

interface LogLine {
  msg: string;
  packs?: number;
}

function capturedLogger() {
  const lines: LogLine[] = [];
  const logger = createLogger({ format: 'json', level: 'info', write: (text) => void lines.push(JSON.parse(text) as LogLine) });
  return { logger, lines };
}

/** A port that refuses connections: listen, note the port, close. */
function refusedPort(): Promise<number> {
  return new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

/** Pool p's tier on an S3 endpoint whose port refuses connections (closed when the test ends). */
async function unreachableS3Tier(): Promise<PoolTier> {
  const port = await refusedPort();
  process.env.AWS_ACCESS_KEY_ID = 'test';
  process.env.AWS_SECRET_ACCESS_KEY = 'test';
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  const local = new LocalChunkStore(path.join(tempDir(), 'pool'));
  const tier = await openPoolTier({
    pool: 'p',
    tier: { url: 's3://bucket/prefix', s3Endpoint: `http://127.0.0.1:${port}`, s3Region: 'us-east-1', coolingMs: 0 },
    local,
    catalog: new MemoryCatalogStore(),
    s3Retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 50 },
  });
  onTestFinished(() => tier.close());
  return tier;
}

const bytesOf = (seed: number, length = 4096) => Uint8Array.from({ length }, (_, i) => (i * 7 + seed) & 0xff);

describe('the daemon cooling timer', () => {
  it('moves cooled packs to a file:// tier, a bounded number per pass, and leaves the manifests local', async () => {
    const root = tempDir();
    const local = new LocalChunkStore(path.join(root, 'pool'));
    const coldDir = path.join(root, 'cold');
    const tier = await openPoolTier({ pool: 'p', tier: { url: `file://${coldDir}`, coolingMs: 0 }, local, catalog: new MemoryCatalogStore() });
    onTestFinished(() => tier.close());
    for (let i = 0; i < 3; i++) await tier.store.put(`packs/pack-${i}`, bytesOf(i));
    await local.put('layer-manifests/p/layer-1.qcow2', bytesOf(9, 100));
    const { logger, lines } = capturedLogger();
    const cooling = new TierCooling({ tieredPools: () => [{ pool: 'p', tier }], logger, intervalMs: 3_600_000, packsPerPass: 2 });

    await cooling.pass();
    expect(lines.filter((l) => l.msg === 'moved cooled packs to the tier').map((l) => l.packs)).toEqual([2]);
    expect(tier.store.stats()).toMatchObject({ movedCold: 2, hotObjects: 1, coldObjects: 2 });
    await cooling.pass();
    expect(tier.store.stats()).toMatchObject({ movedCold: 3, hotObjects: 0, coldObjects: 3, hotBytes: 0 });
    expect(readdirSync(path.join(coldDir, 'packs')).sort()).toEqual(['pack-0', 'pack-1', 'pack-2']);
    expect(existsSync(path.join(root, 'pool', 'packs', 'pack-0'))).toBe(false);
    // The manifest is no pack: it stays local and never reaches the tier.
    expect(await local.get('layer-manifests/p/layer-1.qcow2')).toEqual(bytesOf(9, 100));
    expect(existsSync(path.join(coldDir, 'layer-manifests'))).toBe(false);
    for (let i = 0; i < 3; i++) expect(await tier.store.getRange(`packs/pack-${i}`, 0, 4096)).toEqual(bytesOf(i));
    expect(tier.error()).toBeUndefined();
    await cooling.stop();
  });

  it('an S3 tier whose server does not answer opens at once and reports the failure', async () => {
    const tier = await unreachableS3Tier();
    // Local packs serve while the tier is down.
    await tier.store.put('packs/a', bytesOf(1));
    expect(await tier.store.get('packs/a')).toEqual(bytesOf(1));
    const result = await tier.migrateCold({ nowMs: Date.now(), maxObjects: 10 });
    expect(result.movedObjects).toBe(0);
    expect(tier.error()).toMatch(/tier s3:\/\/bucket\/prefix: .*127\.0\.0\.1/);
    await expect(tier.store.get('packs/missing')).rejects.toThrow(/127\.0\.0\.1/);
    expect(tier.store.stats().coldReadFailures).toBe(1);
    expect(tier.s3Counters?.retries.connection).toBeGreaterThan(0);
  });

  it('an unreachable tier is warned of once and then hourly, not every pass', async () => {
    const tier = await unreachableS3Tier();
    await tier.store.put('packs/a', bytesOf(1));
    const { logger, lines } = capturedLogger();
    let nowMs = 1_000_000;
    const cooling = new TierCooling({ tieredPools: () => [{ pool: 'p', tier }], logger, intervalMs: 3_600_000, nowMs: () => nowMs });
    const skippedWarnings = () => lines.filter((l) => /unreachable; cooling skipped/.test(l.msg)).map((l) => l.msg);
    for (let i = 0; i < 3; i++) {
      await cooling.pass();
      nowMs += 600_000;
    }
    expect(tier.error()).toBeDefined();
    expect(skippedWarnings()).toEqual(['tier unreachable; cooling skipped (retried every pass, this warning repeats hourly while it lasts)']);
    nowMs += TIER_SKIPPED_REMINDER_MS;
    await cooling.pass();
    expect(skippedWarnings()).toHaveLength(2);
    expect(skippedWarnings()[1]).toMatch(/^tier still unreachable/);
    await cooling.stop();
  });

  it('reads tierCoolingIntervalMs from the flag, the environment and the file', () => {
    const dir = tempDir();
    expect(loadConfig({ dataDir: dir }, {}, dir).tierCoolingIntervalMs).toBe(DEFAULT_TIER_COOLING_INTERVAL_MS);
    expect(loadConfig({ dataDir: dir, tierCoolingIntervalMs: '5000' }, {}, dir).tierCoolingIntervalMs).toBe(5000);
    expect(loadConfig({ dataDir: dir }, { STRATA_TIER_COOLING_INTERVAL_MS: '7000' }, dir).tierCoolingIntervalMs).toBe(7000);
    expect(() => loadConfig({ dataDir: dir, tierCoolingIntervalMs: 'soon' }, {}, dir)).toThrow(/tier cooling interval/);
  });
});

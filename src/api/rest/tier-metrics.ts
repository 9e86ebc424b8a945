/**
 * /metrics for tiered dedup pools, read at scrape time: bytes on each tier, promotions, cold read
 * failures and migrations per pool, and an S3 tier's requests, failed attempts and retries by
 * kind (the S3ChunkStore's counters), following the other scrape-time families (renderGauge).
 */
import type { VolumeService } from '../../volume/types.js';
import { renderGauge, type GaugeSample } from './metrics.js';

export async function collectTierMetrics(service: VolumeService): Promise<string[]> {
  const tiers = await service.poolTiers();
  const samples = (value: (t: (typeof tiers)[number]['tier']) => number): GaugeSample[] => tiers.map(({ pool, tier }) => ({ labels: { pool }, value: value(tier) }));
  const byKind = (field: 'errors' | 'retries'): GaugeSample[] =>
    tiers.flatMap(({ pool, tier }) => Object.entries(tier.s3?.[field] ?? {}).map(([kind, value]) => ({ labels: { pool, kind }, value })));
  const s3Tiers = tiers.filter(({ tier }) => tier.s3 !== undefined);
  return [
    renderGauge('strata_pool_tier_hot_bytes', 'Pack bytes of a tiered dedup pool on this host (cached copies of cold packs included).', samples((t) => t.hotBytes)),
    renderGauge('strata_pool_tier_cold_bytes', 'Pack bytes of a tiered dedup pool with a verified copy in its tier.', samples((t) => t.coldBytes)),
    renderGauge('strata_pool_tier_up', '1 while the pool\'s tier answers, 0 after a failure to reach it.', samples((t) => (t.error === undefined ? 1 : 0))),
    renderGauge('strata_pool_tier_promotions_total', 'Cold packs copied back to this host after random reads.', samples((t) => t.promotions), 'counter'),
    renderGauge('strata_pool_tier_cold_read_failures_total', 'Reads of cold packs that failed (the tier did not answer in time, or at all).', samples((t) => t.coldReadFailures), 'counter'),
    renderGauge('strata_pool_tier_migrations_total', 'Packs moved to the tier (cooling passes and volume evict).', samples((t) => t.movedCold), 'counter'),
    renderGauge('strata_pool_tier_migration_failures_total', 'Packs that stayed local because a step of their move failed.', samples((t) => t.migrationFailures), 'counter'),
    renderGauge('strata_s3_tier_requests_total', 'Requests an S3 tier sent (retries included).', s3Tiers.map(({ pool, tier }) => ({ labels: { pool }, value: tier.s3?.requests ?? 0 })), 'counter'),
    renderGauge('strata_s3_tier_errors_total', 'Failed attempts of S3 tier requests, by kind of failure.', byKind('errors'), 'counter'),
    renderGauge('strata_s3_tier_retries_total', 'S3 tier requests retried, by kind of failure.', byKind('retries'), 'counter'),
    renderGauge('strata_s3_tier_failed_calls_total', 'S3 tier calls that failed after all retries.', s3Tiers.map(({ pool, tier }) => ({ labels: { pool }, value: tier.s3?.failedCalls ?? 0 })), 'counter'),
  ];
}

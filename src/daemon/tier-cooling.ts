/**
 * The daemon's cooling timer: every `intervalMs` one pass moves, per tiered dedup pool, at most
 * `packsPerPass` packs not read for the pool's cooling period to its tier (verified there, then
 * the local copy deleted: TieredChunkStore.migrateCold), and logs what moved and what failed.
 * A pool whose tier cannot be reached is skipped (its error shows in pool info/df) and retried
 * next pass; the warning says so once and then hourly while the outage lasts, not every pass (the
 * tier logs its own failing/answers-again changes). Passes never overlap; stop() waits for the one running.
 */
import type { Logger } from 'pino';
import type { PoolTier } from '../store/pool-tier.js';
import { PeriodicPass } from './periodic-pass.js';

/** Packs one pass moves per pool, at most: the bound on one tick's work (about 256 MiB). */
export const TIER_COOLING_PACKS_PER_PASS = 64;
/** While a pool's tier stays unreachable, the skipped-pass warning comes again after this long. */
export const TIER_SKIPPED_REMINDER_MS = 3_600_000;

export interface TierCoolingOptions {
  tieredPools: () => readonly { pool: string; tier: PoolTier }[];
  logger: Logger;
  intervalMs: number;
  packsPerPass?: number;
  /** The clock (tests move it). Default Date.now. */
  nowMs?: () => number;
}

export class TierCooling {
  private readonly timer: PeriodicPass;
  private readonly abort = new AbortController();
  /** Per pool whose tier was unreachable: when the skipped-pass warning was last logged. */
  private readonly skipWarnedAtMs = new Map<string, number>();

  constructor(private readonly options: TierCoolingOptions) {
    this.timer = new PeriodicPass(options.intervalMs, () => this.pass());
  }

  private get stopped(): boolean {
    return this.timer.isStopped;
  }

  start(): void {
    this.timer.start();
  }

  async stop(): Promise<void> {
    this.abort.abort(new Error('the daemon is stopping'));
    await this.timer.stop();
  }

  /** One pass over every tiered pool (the timer's tick; tests call it directly). */
  async pass(): Promise<void> {
    const { logger } = this.options;
    for (const { pool, tier } of this.options.tieredPools()) {
      if (this.stopped) return;
      try {
        const result = await tier.migrateCold({ nowMs: Date.now(), maxObjects: this.options.packsPerPass ?? TIER_COOLING_PACKS_PER_PASS, signal: this.abort.signal });
        const error = tier.error();
        if (result.movedObjects > 0) logger.info({ pool, tier: tier.url, packs: result.movedObjects, bytes: result.movedBytes }, 'moved cooled packs to the tier');
        for (const f of result.failed) logger.warn({ pool, tier: tier.url, pack: f.key, err: f.error.message }, 'could not move a cooled pack to the tier; the next pass retries');
        if (error !== undefined && result.failed.length === 0) this.skipped(pool, error);
        // The tier answers again (the pool tier's own log line says so): a later outage warns anew.
        else if (error === undefined) this.skipWarnedAtMs.delete(pool);
      } catch (err) {
        if (!this.stopped) logger.warn({ pool, err }, 'tier cooling pass failed; the next one retries');
      }
    }
  }

  /** A pass skipped for an unreachable tier: warned the first time and then hourly, not each pass. */
  private skipped(pool: string, error: string): void {
    const nowMs = (this.options.nowMs ?? Date.now)();
    const warnedAtMs = this.skipWarnedAtMs.get(pool);
    if (warnedAtMs !== undefined && nowMs - warnedAtMs < TIER_SKIPPED_REMINDER_MS) return;
    this.skipWarnedAtMs.set(pool, nowMs);
    const again = warnedAtMs === undefined ? '' : ' still';
    this.options.logger.warn({ pool, err: error }, `tier${again} unreachable; cooling skipped (retried every pass, this warning repeats hourly while it lasts)`);
  }
}

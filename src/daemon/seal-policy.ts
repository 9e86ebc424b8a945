/**
 * The daemon's seal-policy timer: every `intervalMs` one pass of VolumeService.applySealPolicy
 * freezes the active layers of dedup pool volumes that have cooled (--seal-after) or grown
 * (--seal-above), at most SEAL_POLICY_FREEZES_PER_PASS per pass, and logs what it froze; their
 * seal and compact jobs run in the background. Passes never overlap; stop() waits for the one
 * running. Pools without a policy cost one catalog read per pass.
 */
import type { Logger } from 'pino';
import type { VolumeService } from '../volume/types.js';
import { PeriodicPass } from './periodic-pass.js';

export class SealPolicyTimer {
  private readonly timer: PeriodicPass;

  constructor(private readonly options: { service: VolumeService; logger: Logger; intervalMs: number }) {
    this.timer = new PeriodicPass(options.intervalMs, () => this.pass());
  }

  start(): void {
    this.timer.start();
  }

  stop(): Promise<void> {
    return this.timer.stop();
  }

  /** One pass (the timer's tick). */
  async pass(): Promise<void> {
    const { logger } = this.options;
    try {
      const pass = await this.options.service.applySealPolicy();
      for (const f of pass.frozen) logger.info({ volume: f.volume, reason: f.reason, layer: f.layerId }, 'seal policy froze the active layer');
      for (const f of pass.failed) logger.warn({ volume: f.volume, err: f.error }, 'seal policy could not freeze the active layer; the next pass retries');
    } catch (err) {
      if (!this.timer.isStopped) logger.warn({ err }, 'seal policy pass failed; the next one retries');
    }
  }
}

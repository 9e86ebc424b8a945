/**
 * The daemon's trash timer: every `intervalMs` one pass purges up to `batchSize` expired volumes
 * from the trash (the volume layer's purgeExpiredTrash, in expiry order, continuing where the last
 * pass stopped so entries it cannot purge do not hold back the rest), and logs each purge. At
 * start-up it catches up: passes run back to back until every expired volume has been looked at.
 * Passes never overlap; stop() waits for the one running.
 */
import type { Logger } from 'pino';
import type { ExpiredTrashPass, VolumeService } from '../volume/types.js';

/** Expired volumes one timer pass looks at, at most: the bound on the work of one tick. */
export const TRASH_PASS_BATCH = 32;

export interface TrashExpiryOptions {
  service: VolumeService;
  logger: Logger;
  intervalMs: number;
  batchSize?: number;
}

export class TrashExpiry {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  /** Where the next pass continues in expiry order (undefined: from the start). */
  private cursor: string | undefined;
  /** Entries whose refusal was logged already (logged once per daemon run, not every tick). */
  private readonly refusalsLogged = new Set<string>();

  constructor(private readonly options: TrashExpiryOptions) {}

  /** Purges what expired while the daemon was down, then starts the timer. */
  async start(): Promise<void> {
    try {
      let pass: ExpiredTrashPass;
      do pass = await this.pass();
      while (pass.nextAfter !== undefined && !this.stopped);
    } catch (err) {
      // The daemon serves its volumes anyway; the timer tries again.
      this.options.logger.warn({ err }, 'could not purge the expired trash at start-up; the timer retries');
    }
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.pass().then(
        () => undefined,
        (err: unknown) => this.options.logger.warn({ err }, 'trash expiry pass failed; the next one retries'),
      );
      void this.running.then(() => this.schedule());
    }, this.options.intervalMs);
  }

  private async pass(): Promise<ExpiredTrashPass> {
    const { service, logger } = this.options;
    const pass = await service.purgeExpiredTrash({ limit: this.options.batchSize ?? TRASH_PASS_BATCH, ...(this.cursor === undefined ? {} : { after: this.cursor }) });
    this.cursor = pass.nextAfter;
    for (const e of pass.purged) {
      logger.info({ pool: e.pool, volume: e.name, id: e.id, deletedAt: e.deletedAt, expiresAt: e.expiresAt }, 'purged an expired volume from the trash');
    }
    for (const { entry, reason } of pass.refused) {
      if (this.refusalsLogged.has(entry.id)) continue;
      this.refusalsLogged.add(entry.id);
      logger.warn({ pool: entry.pool, volume: entry.name, id: entry.id, reason }, 'cannot purge an expired volume from the trash yet; retrying at every check');
    }
    return pass;
  }
}

/**
 * DeviceErrorReport: how a connection of either export server (NBD, vhost-user-blk) reports the
 * device errors its client gets. A client that keeps failing (a pool that filled up, a disk that
 * fails) must not go unnoticed after the first line, nor flood the log: the first failure is
 * logged at once, and every one that comes DEVICE_ERROR_REPORT_INTERVAL_MS or more after the last
 * line logged is logged too, with the count of those in between. All are counted.
 */
import { isStorageError } from '../core/errors.js';
import type { ExportLog } from './log.js';

/** Device errors after the first are logged at most this often, per connection. */
export const DEVICE_ERROR_REPORT_INTERVAL_MS = 60_000;

export interface DeviceErrorReportOptions {
  log: ExportLog;
  /** What the line starts with: the protocol, and the export where the log does not say it. */
  subject: string;
  /** Who gets the error: 'guest', 'client'. */
  peer: string;
  /** Milliseconds for the interval (default Date.now; tests pass their own). */
  clock?: () => number;
}

export class DeviceErrorReport {
  private errorCount = 0;
  private lastReportMs: number | undefined;
  private unreported = 0;
  private readonly clock: () => number;

  constructor(private readonly options: DeviceErrorReportOptions) {
    this.clock = options.clock ?? Date.now;
  }

  /** Device errors noted (the logged ones and the others). */
  get errors(): number {
    return this.errorCount;
  }

  /** One failed device call; reportedAs is what the peer was told (IOERR, ENOSPC). */
  note(err: unknown, reportedAs: string): void {
    this.errorCount++;
    const now = this.clock();
    if (this.lastReportMs !== undefined && now - this.lastReportMs < DEVICE_ERROR_REPORT_INTERVAL_MS) {
      this.unreported++;
      return;
    }
    const since = this.unreported > 0 ? `; ${this.unreported} more since the last report` : '';
    this.lastReportMs = now;
    this.unreported = 0;
    const message = err instanceof Error ? err.message : String(err);
    const { subject, peer } = this.options;
    this.options.log(
      `${subject}: device error (reported to the ${peer} as ${reportedAs}; at most one line a minute${since}): ${isStorageError(err) ? `${err.code}: ` : ''}${message}`,
      'warn',
    );
  }
}

/**
 * Follows a job the daemon runs for a request that answers only when the job has ended (pool
 * scrub, bucket delete --purge): meanwhile the progress bar shows the job's progress, read from
 * the job list (the newest queued or running job of that kind and target).
 */
import type { JobJson } from '../../api/rest/schemas.js';
import type { ApiClient } from './client.js';
import type { ProgressBar } from './progress-bar.js';

/** How often the bar asks for the job's progress. */
const PROGRESS_POLL_MS = 250;

export class JobFollower {
  private stopped = false;
  private wake: (() => void) | undefined;

  constructor(
    private readonly kind: JobJson['kind'],
    private readonly target: string,
  ) {}

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  /** Draws the job's progress until stopped (a failed poll just ends the following). */
  async run(client: ApiClient, bar: ProgressBar): Promise<void> {
    while (!this.stopped) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, PROGRESS_POLL_MS);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      if (this.stopped) return;
      let jobs: JobJson[];
      try {
        jobs = await client.json<JobJson[]>('GET', '/v1/jobs', 'cannot list jobs');
      } catch {
        return;
      }
      const job = jobs.filter((j) => j.kind === this.kind && j.target === this.target && (j.state === 'running' || j.state === 'queued')).at(-1);
      if (job !== undefined && !this.stopped) bar.update(job.doneBytes, job.totalBytes || undefined);
    }
  }
}

/**
 * Sends the request that runs the job, with the bar following the job meanwhile when it is
 * enabled; the bar's line is ended when the request fails (finishing it is the caller's, with the
 * totals it got).
 */
export async function whileFollowing<T>(client: ApiClient, bar: ProgressBar, enabled: boolean, follower: JobFollower, request: () => Promise<T>): Promise<T> {
  const follow = enabled ? follower.run(client, bar) : Promise.resolve();
  try {
    return await request();
  } catch (err) {
    bar.abort();
    throw err;
  } finally {
    follower.stop();
    await follow;
  }
}

/**
 * Start-up recovery of the object model: every put still in the journal belongs to a process that
 * died (the daemon runs this before it serves any request), so a 'writing' one gives back all it
 * added and a 'committed' one its markers; then every release still recorded runs to its end.
 */
import type { ObjectContext } from './context.js';
import { settlePut } from './put-journal.js';
import { runPendingReleases } from './releases.js';

export interface RecoveryReport {
  /** Puts that were writing when their process died: nothing of them is left. */
  readonly putsAbandoned: number;
  /** Puts that had committed: their markers were dropped. */
  readonly putsSettled: number;
  /** Journalled steps of abandoned puts whose chunk references were given back. */
  readonly stepsUndone: number;
  readonly releasesRun: number;
}

export async function recoverObjects(context: ObjectContext): Promise<RecoveryReport> {
  let putsAbandoned = 0;
  let putsSettled = 0;
  let stepsUndone = 0;
  for (;;) {
    const page = await context.tables.puts.page({ limit: 100 });
    if (page.records.length === 0) break;
    for (const { record } of page.records) {
      stepsUndone += await settlePut(context, record.putId, record.pool, record.state);
      if (record.state === 'writing') putsAbandoned++;
      else putsSettled++;
    }
  }
  const releasesRun = await runPendingReleases(context);
  return { putsAbandoned, putsSettled, stepsUndone, releasesRun };
}

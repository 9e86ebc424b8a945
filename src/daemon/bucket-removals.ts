/**
 * At start-up, the bucket deletes a stopped daemon left half done (src/objects/bucket-removal.ts
 * InterruptedRemoval): a bucket marked by `strata bucket delete --purge` has its purge resumed as a
 * 'bucket-purge' job (in `strata job list`; the daemon does not wait for it); a bucket S3's
 * DeleteBucket or a delete without --purge marked is deleted when empty, or serves again when it
 * is not (the delete would have taken its mark back). One log line per bucket.
 */
import type { Logger } from 'pino';
import type { ObjectModel } from '../objects/model.js';
import type { VolumeService } from '../volume/types.js';

export interface ResumedPurge {
  bucket: string;
  /** Settles when the purge's job has ended (it never rejects: a failure is logged). */
  done: Promise<void>;
}

/**
 * Settles every bucket a delete left marked; resumes the purges as jobs and returns them. A bucket
 * that cannot be settled is logged and left as it is (`strata bucket delete NAME --purge` finishes it).
 */
export async function settleBucketRemovals(model: Pick<ObjectModel, 'markedBuckets' | 'settleInterruptedRemoval' | 'removeBucket'>, service: Pick<VolumeService, 'runJob'>, logger: Logger): Promise<ResumedPurge[]> {
  const resumed: ResumedPurge[] = [];
  for (const bucket of await model.markedBuckets()) {
    let outcome;
    try {
      outcome = await model.settleInterruptedRemoval(bucket);
    } catch (err) {
      logger.error({ bucket, err: (err as Error).message }, "could not settle a bucket an interrupted delete left; 'strata bucket delete NAME --purge' finishes it");
      continue;
    }
    if (outcome === 'finished') {
      logger.info({ bucket }, 'finished the delete of an empty bucket an interrupted delete left');
      continue;
    }
    if (outcome === 'unmarked') {
      logger.warn({ bucket }, 'a bucket an interrupted delete (without purge) left marked holds objects: it serves again, as that delete would have left it');
      continue;
    }
    const job = service.runJob('bucket-purge', bucket, (progress) => model.removeBucket(bucket, { purge: true, progress, signal: progress.signal }));
    logger.info({ bucket }, 'resuming the purge of a bucket an interrupted delete left (a bucket-purge job)');
    resumed.push({
      bucket,
      done: job.then(
        ({ job: ended, value }) => logger.info({ bucket, job: ended.id, versions: value.versionCount, uploads: value.uploadCount }, 'resumed bucket purge finished: the bucket is deleted'),
        (err: unknown) => logger.warn({ bucket, err: (err as Error).message }, "the resumed bucket purge stopped; it resumes at the next start, or run 'strata bucket delete NAME --purge'"),
      ),
    });
  }
  return resumed;
}

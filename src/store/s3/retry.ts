/**
 * Runs one S3 call under the store's retry policy: each attempt gets its own timer (a stalled
 * server cannot hold a call forever), transient failures are retried after an exponential backoff
 * with full jitter while the policy's count and time allow, and every failure ends as a
 * StorageError that names the endpoint and what to do: UNAVAILABLE when the failure was transient
 * and the policy ran out (the server may answer later: clients are told to try again), IO_ERROR
 * when retrying cannot help (refused keys, a missing bucket or credentials: an operator has to
 * act, and the message says how). The counters are the store's metrics.
 */
import { StorageError } from '../../core/errors.js';
import type { S3RetryEvent, S3RetryPolicy } from './config.js';
import {
  S3_FAILURE_DESCRIPTIONS,
  S3_FAILURE_KINDS,
  classifyS3Failure,
  errorCodeOf,
  isTransient,
  messageOf,
  type S3FailureKind,
} from './failure.js';

/** Live counters (plain numbers, safe to read at any time, e.g. for /metrics). */
export interface S3StoreCounters {
  /** Requests sent, retries included. */
  requests: number;
  /** Failed attempts, by kind. */
  readonly errors: Record<S3FailureKind, number>;
  /** Attempts retried, by the kind of failure that caused the retry. */
  readonly retries: Record<S3FailureKind, number>;
  /** Calls that ended in an error after all retries (cancellations not included). */
  failedCalls: number;
}

export function newS3StoreCounters(): S3StoreCounters {
  const zeroes = (): Record<S3FailureKind, number> => Object.fromEntries(S3_FAILURE_KINDS.map((k) => [k, 0])) as Record<S3FailureKind, number>;
  return { requests: 0, errors: zeroes(), retries: zeroes(), failedCalls: 0 };
}

/** Where the calls go, for messages. */
export interface S3Target {
  readonly endpoint: string;
  readonly bucket: string;
  readonly profile: string | undefined;
}

/** One call: the operation and key it names, and the caller's signal. */
export interface S3CallContext {
  readonly operation: string;
  readonly key: string;
  readonly signal: AbortSignal | undefined;
}

function cancelled(call: S3CallContext, cause?: unknown): StorageError {
  return new StorageError('CANCELLED', `S3 ${call.operation} of ${JSON.stringify(call.key)} was cancelled`, cause === undefined ? undefined : { cause });
}

/** Resolves after delayMs, or rejects with CANCELLED as soon as the signal aborts. */
function backoffSleep(delayMs: number, call: S3CallContext): Promise<void> {
  return new Promise((resolve, reject) => {
    const signal = call.signal;
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(cancelled(call));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, delayMs);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function credentialsHint(target: S3Target): string {
  const profile = target.profile === undefined ? 'AWS_PROFILE or the default profile' : `profile ${JSON.stringify(target.profile)}`;
  return `the AWS default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or ${profile} in the shared credentials file (~/.aws/credentials or AWS_SHARED_CREDENTIALS_FILE)`;
}

/** The message for a call that failed for good, naming the endpoint and the fix. */
export function describeS3Failure(kind: S3FailureKind, err: unknown, call: S3CallContext, target: S3Target, attempts: number, elapsedMs: number): string {
  const what = `S3 ${call.operation} of ${JSON.stringify(call.key)} in bucket ${target.bucket} at ${target.endpoint}`;
  const detail = `${errorCodeOf(err)}: ${messageOf(err)}`;
  switch (kind) {
    case 'auth':
      return `${what} was refused (${detail}): check the access key and secret (${credentialsHint(target)}) and that they may read and write the bucket`;
    case 'credentials':
      return `${what} found no credentials (${detail}): provide them through ${credentialsHint(target)}`;
    case 'bucket':
      return `${what} failed: bucket ${target.bucket} does not exist there: create it, or fix the store's bucket name or endpoint`;
    case 'other':
      return `${what} failed (${detail}); it was not retried`;
    default:
      return (
        `${what} failed after ${attempts} attempt${attempts === 1 ? '' : 's'} in ${Math.round(elapsedMs)} ms: ` +
        `${S3_FAILURE_DESCRIPTIONS[kind]} (${detail}): check that the S3 server at ${target.endpoint} is running and reachable; ` +
        'the call can be retried later'
      );
  }
}

export class S3Retrier {
  constructor(
    private readonly policy: S3RetryPolicy,
    private readonly target: S3Target,
    readonly counters: S3StoreCounters,
    private readonly logger: ((event: S3RetryEvent) => void) | undefined,
  ) {}

  /** The upper bound of the backoff before retry number `retry` (1 = the first retry). */
  private backoffCeilingMs(retry: number): number {
    return Math.min(this.policy.maxDelayMs, this.policy.baseDelayMs * 2 ** Math.min(retry - 1, 30));
  }

  /**
   * Runs `attempt` until it succeeds, fails for good, or the policy runs out. `attempt` gets a
   * signal that aborts when the caller cancels or this attempt's time is up; it must stop then.
   * A StorageError thrown by `attempt` passes through unchanged (it is already an answer).
   */
  async run<T>(call: S3CallContext, attempt: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const started = performance.now();
    for (let attemptNumber = 1; ; attemptNumber++) {
      if (call.signal?.aborted) throw cancelled(call);
      const remainingMs = this.policy.totalTimeMs - (performance.now() - started);
      const timer = new AbortController();
      const timeout = setTimeout(() => timer.abort(), Math.max(1, Math.min(this.policy.attemptTimeoutMs, remainingMs)));
      const signal = call.signal === undefined ? timer.signal : AbortSignal.any([call.signal, timer.signal]);
      let failure: unknown;
      try {
        this.counters.requests++;
        return await attempt(signal);
      } catch (err) {
        failure = err;
      } finally {
        clearTimeout(timeout);
      }
      if (call.signal?.aborted) throw cancelled(call, failure);
      if (failure instanceof StorageError) throw failure;
      const kind = classifyS3Failure(failure, timer.signal.aborted);
      this.counters.errors[kind]++;
      const elapsedMs = performance.now() - started;
      const delayMs = Math.random() * this.backoffCeilingMs(attemptNumber);
      const retry = isTransient(kind) && attemptNumber < this.policy.maxAttempts && elapsedMs + delayMs < this.policy.totalTimeMs;
      if (!retry) {
        this.counters.failedCalls++;
        throw new StorageError(isTransient(kind) ? 'UNAVAILABLE' : 'IO_ERROR', describeS3Failure(kind, failure, call, this.target, attemptNumber, elapsedMs), { cause: failure });
      }
      this.counters.retries[kind]++;
      this.logger?.({
        operation: call.operation,
        key: call.key,
        attempt: attemptNumber,
        kind,
        delayMs: Math.round(delayMs),
        message: `${errorCodeOf(failure)}: ${messageOf(failure)}`,
        endpoint: this.target.endpoint,
      });
      await backoffSleep(delayMs, call);
    }
  }
}

/** Messages between the hostile-input runner (test side) and its worker. */

export interface CasePlan {
  readOnly: boolean;
  dirtyPolicy?: 'repair' | 'ignore';
  /** Read the guest from offset 0 up to this many bytes (or its size). */
  readLimitBytes: number;
  /** Further 4 KiB reads at these guest offsets (past readLimitBytes, e.g. near a huge size). */
  extraReads?: number[];
  blockStatus?: boolean;
  check: boolean;
  /** Writes (of 0x5a bytes) after the reads and check, then a flush. Needs readOnly false. */
  writes?: { guestOffset: number; lengthBytes: number }[];
  /** Send back the image bytes after close (to inspect what writes did). */
  returnImage?: boolean;
}

export interface CaseRequest {
  id: number;
  bytes: ArrayBuffer;
  plan: CasePlan;
}

export interface CaseOutcome {
  id: number;
  /**
   * ok: every step succeeded; storage-error: a StorageError ended the case (allowed);
   * crash: any other exception (a bug); hang: no answer before the deadline (a bug);
   * worker-died: the worker thread failed, e.g. out of memory or an unhandled rejection (a bug).
   */
  result: 'ok' | 'storage-error' | 'crash' | 'hang' | 'worker-died';
  /** The step that was running when the case ended (open, read, check, write, ...). */
  step: string;
  code?: string;
  message?: string;
  stack?: string;
  info?: { sizeBytes: number; corrupt: boolean; dirty: boolean; readOnly: boolean; snapshots: number };
  check?: { corruptions: number; leaks: number; messages: number };
  readErrors?: number;
  firstReadError?: string;
  memory?: { heapPlusBuffersGrowthBytes: number; rssGrowthBytes: number };
  image?: Uint8Array;
  elapsedMs?: number;
}

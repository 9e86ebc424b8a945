/** The operations the crash child runs and journals (shared by crash-child.ts and crash.test.ts). */
export const CRASH_POOLS = ['p', 'q'] as const;
export const CRASH_MAX_CHAIN_DEPTH = 6;

type Pool = string;

export type CrashOp =
  | { op: 'create'; pool: Pool; vol: string; sizeBytes: number }
  | { op: 'write'; pool: Pool; vol: string; offset: number; length: number; seed: number }
  | { op: 'snapshot'; pool: Pool; vol: string; snap: string }
  | { op: 'deleteSnapshot'; pool: Pool; vol: string; snap: string }
  | { op: 'rollback'; pool: Pool; vol: string; snap: string }
  | { op: 'unprotect'; pool: Pool; vol: string; snap: string }
  | { op: 'clone'; pool: Pool; vol: string; snap: string; destPool: Pool; dest: string }
  | { op: 'flatten'; pool: Pool; vol: string }
  | { op: 'import'; pool: Pool; vol: string; sizeBytes: number; seed: number }
  | { op: 'copy'; pool: Pool; vol: string; destPool: Pool; dest: string }
  | { op: 'deleteVolume'; pool: Pool; vol: string }
  | { op: 'resize'; pool: Pool; vol: string; sizeBytes: number }
  | { op: 'exportQcow2'; pool: Pool; vol: string };

export interface JournalEntry {
  i: number;
  phase: 'begin' | 'end' | 'failed';
  op?: CrashOp;
  error?: string;
}

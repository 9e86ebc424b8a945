/**
 * What a scrub of a dedup pool reports (src/store/dedup/scrub.ts runs it; docs/dedup.md): totals,
 * and the problems it found, each with a kind a program can switch on, a message an operator can
 * act on, and whether it was repaired. The list is bounded (the first `problemsMax`); the counts
 * per kind are always complete. The whole report is plain JSON, so `strata pool scrub --json`
 * prints it as it is. Here in core because ChunkedPools.scrub returns it to the volume layer.
 */

/** A kind of problem, from the worst down. */
export const SCRUB_PROBLEM_KINDS = [
  /** Every copy of a chunk that holders name is corrupt or gone: the layers named cannot be read whole. */
  'chunk-lost',
  /** The copy the index points at fails its hash (bit rot) or lies outside its pack; a good copy elsewhere can replace it. */
  'chunk-corrupt',
  /** The index points into a pack the chunk store does not have. */
  'pack-missing',
  /** A pack's header, footer index or checksum is damaged (its chunks are checked one by one against the index). */
  'pack-damaged',
  /** A holder (a sealed layer's manifest) cannot be read: its references are unknown, so no count is lowered. */
  'holder-unreadable',
  /** A chunk holders name has no index entry (a good copy in a pack can rebuild it). */
  'chunk-unindexed',
  /** A chunk's count is below the references holders have: GC could collect it while in use. */
  'refs-low',
  /** A chunk's count is above the references holders have, confirmed by an earlier scrub: a leak. */
  'refs-leaked',
  /** A chunk's count is above the references holders have, seen for the first time (or changed since). */
  'refs-leak-suspected',
  /** The index points into a pack that has no pack record (GC would delete it as an orphan). */
  'pack-unrecorded',
  /** A pack no index entry or pack record knows: left by an interrupted write; GC deletes it. */
  'pack-orphan',
  /** A copy of a chunk nothing points at fails its hash: harmless, GC drops it with its pack. */
  'spare-copy-corrupt',
] as const;
export type ScrubProblemKind = (typeof SCRUB_PROBLEM_KINDS)[number];

/**
 * Kinds that need no action: GC clears them (an orphan pack once its grace period has passed; a
 * damaged unused copy when it rewrites or deletes that pack). Listed, but a report with only
 * these is still clean.
 */
export const SCRUB_NOTICE_KINDS: readonly ScrubProblemKind[] = ['pack-orphan', 'spare-copy-corrupt'];

export interface ScrubProblem {
  readonly kind: ScrubProblemKind;
  /** What it is about: a chunk hash, a pack id or a holder's name. */
  readonly subject: string;
  /** What is wrong, what was done, and what to do. */
  readonly message: string;
  /** True when this scrub fixed it. */
  readonly repaired: boolean;
  /** For a lost chunk: the holders that name it (the first few). */
  readonly holders?: readonly string[];
}

export interface ScrubProgress {
  readonly phase: 'index' | 'references' | 'packs' | 'repair';
  /** Index records, holders, packs or fixes handled so far in this phase. */
  readonly done: number;
  /** In the packs phase: the bytes of the packs read so far (for a progress bar). */
  readonly doneBytes?: number;
}

export interface ScrubReport {
  /** Whether repairs were asked for. */
  readonly repair: boolean;
  /** No problem found but notices (SCRUB_NOTICE_KINDS); a repaired problem still counts: the next scrub tells. */
  clean: boolean;
  /** Index entries and the bytes of the chunks they point at. */
  chunks: number;
  chunkBytes: number;
  /** Packs read from the chunk store and their bytes. */
  packs: number;
  packBytes: number;
  /** Holders read (sealed layers' manifests) and the chunk references they hold. */
  holders: number;
  references: number;
  /** Problems found, repaired, and beyond repair (chunk-lost). */
  problemCount: number;
  repaired: number;
  unrecoverable: number;
  /** Candidates that changed while the scrub ran (a daemon call touched them): left for the next scrub. */
  changedDuringScrub: number;
  problemsByKind: Partial<Record<ScrubProblemKind, number>>;
  /** The first problems found (at most the `problemsMax` asked for). */
  problems: ScrubProblem[];
  /** Problems found beyond the list's bound. */
  problemsOmitted: number;
}

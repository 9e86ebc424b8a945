/**
 * LocalCoordinator: the Coordinator of a single daemon. Leases live in this process; fencing
 * tokens come from one counter, so they increase across volumes and grants. Nothing persists: a
 * restarted daemon starts with no writers, which is right since the previous process's writers
 * died with it (the data folder's lock keeps a second daemon out).
 */
import type { Coordinator, WriterLease } from '../core/coordinator.js';
import { StorageError } from '../core/errors.js';

interface Grant {
  readonly holder: string;
  readonly fencingToken: number;
  readonly controller: AbortController;
}

export class LocalCoordinator implements Coordinator {
  private readonly grants = new Map<string, Grant>();
  private lastToken = 0;
  private closed = false;

  async acquireWriter(volumeId: string, holder: string): Promise<WriterLease> {
    if (this.closed) throw new StorageError('BUSY', 'the daemon is shutting down; no volume can be opened for writing');
    const current = this.grants.get(volumeId);
    if (current !== undefined) {
      throw new StorageError('BUSY', `volume ${volumeId} is open for writing by ${current.holder}`);
    }
    const grant: Grant = { holder, fencingToken: ++this.lastToken, controller: new AbortController() };
    this.grants.set(volumeId, grant);
    return {
      volumeId,
      holder,
      fencingToken: grant.fencingToken,
      lost: grant.controller.signal,
      release: async () => {
        if (this.grants.get(volumeId) === grant) this.grants.delete(volumeId);
      },
    };
  }

  async writerOf(volumeId: string): Promise<string | undefined> {
    return this.grants.get(volumeId)?.holder;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const grant of this.grants.values()) grant.controller.abort(new StorageError('BUSY', 'the coordinator closed'));
    this.grants.clear();
  }
}

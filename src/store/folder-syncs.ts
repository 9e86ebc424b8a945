/**
 * FolderSyncs: fsyncs of folders, shared between the callers that want one at the same time
 * (group commit). A new name (a rename or link) survives a power cut once its folder has been
 * fsynced after the name was made; one fsync covers every name made before it began, so
 * concurrent puts into one folder (a pool's packs/) need one folder fsync between them, not one
 * each.
 *
 * The rule that keeps it safe: sync(dir) resolves only after an fsync of dir that began after the
 * call, since one already running may have begun before the caller's name was made. A caller
 * arriving while one runs joins the next one, which begins when the running one ends and serves
 * every caller that arrived meanwhile. A failed fsync fails every caller it served.
 *
 * Held folders (holdFolders): the folder stays open between fsyncs, so an fsync is one call on
 * libuv's thread pool, not three (open, fsync, close). Only for the one writer of its folders:
 * a held descriptor names the folder it opened, so a folder removed and made again would be
 * fsynced through a stale one. The writer's own removals therefore go through remove(), which
 * waits for the folder's fsyncs, closes the descriptor and removes the folder before any later
 * fsync opens the folder anew; nothing else may remove the folders.
 */
import fsCallbacks from 'node:fs';
import { closeDescriptor, errnoOf, fsyncDescriptor } from './local-folder.js';

/**
 * Folders held open at most (a pool's store puts into a few: packs/, its root, a manifests
 * folder); past it, the one fsynced least recently and idle is closed to hold the new one.
 */
export const HELD_FOLDERS_MAX = 4;

interface FolderState {
  /** Settles when the last fsync or removal queued for this folder has ended. */
  tail: Promise<void>;
  /** The fsync queued and not begun yet: it covers any caller arriving now. */
  pending: Promise<void> | undefined;
  /** Fsyncs and removals queued or running. */
  queued: number;
  /** The folder open for fsyncs (held folders only). */
  fd: number | undefined;
  /** When it was last fsynced (FolderSyncs.syncsBegun then): the least recent is let go first. */
  lastSync: number;
}

function openFolder(dir: string): Promise<number> {
  return new Promise((resolve, reject) => fsCallbacks.open(dir, 'r', (err, fd) => (err ? reject(err) : resolve(fd))));
}


const ignore = (): void => undefined;

export class FolderSyncs {
  private readonly folders = new Map<string, FolderState>();
  private heldCount = 0;
  /** fsyncs begun (tests read it: concurrent callers share them). */
  syncsBegun = 0;

  constructor(private readonly holdFolders: boolean) {}

  /** Resolves once an fsync of `dir` that began after this call has succeeded. */
  sync(dir: string): Promise<void> {
    const state = this.stateOf(dir);
    if (state.pending !== undefined) return state.pending;
    const sync = this.queue(dir, state, () => {
      state.pending = undefined; // begun: a caller from now on needs the next one
      return this.fsyncNow(dir, state);
    });
    state.pending = sync;
    return sync;
  }

  /**
   * An fsync of `dir` on the calling thread, for a caller that knows the folder's fsync never waits
   * for a device (tmpfs): a pool hand-off there costs two thread wake-ups, each a wait for a time
   * slice on a busy machine, for a call that does nothing. True when done; false when it must go
   * through sync(): the folder is not held open (yet), or an fsync or removal of it is queued,
   * whose order sync() keeps. It begins after the call, as sync()'s rule wants. A failure is
   * thrown and the held descriptor let go, as a failed sync() does.
   */
  syncNow(dir: string): boolean {
    const state = this.folders.get(dir);
    if (state === undefined || state.fd === undefined || state.queued > 0) return false;
    state.lastSync = ++this.syncsBegun;
    try {
      fsCallbacks.fsyncSync(state.fd);
    } catch (err) {
      this.release(state).catch(ignore);
      throw err;
    }
    return true;
  }

  /**
   * Runs `removeFolder` (an rmdir of `dir`) once the fsyncs queued before it have ended; when it
   * succeeds the held descriptor is closed before any fsync queued after it begins, so that one
   * opens whatever folder has the name by then. (A name made in a folder made again after the
   * rmdir is fsynced by a call made after the rmdir, hence queued after it.)
   */
  remove<T>(dir: string, removeFolder: () => Promise<T>): Promise<T> {
    const state = this.stateOf(dir);
    return this.queue(dir, state, async () => {
      const removed = await removeFolder();
      await this.release(state).catch(ignore);
      return removed;
    });
  }

  /** Waits for the fsyncs and removals queued, then closes the held folders (the owner is closing). */
  async close(): Promise<void> {
    await Promise.all([...this.folders.values()].map((state) => state.tail));
    for (const state of [...this.folders.values()]) await this.release(state).catch(ignore);
    this.folders.clear();
  }

  private stateOf(dir: string): FolderState {
    let state = this.folders.get(dir);
    if (state === undefined) {
      state = { tail: Promise.resolve(), pending: undefined, queued: 0, fd: undefined, lastSync: 0 };
      this.folders.set(dir, state);
    }
    return state;
  }

  /** Runs `run` after everything queued for the folder before it (one at a time). */
  private queue<T>(dir: string, state: FolderState, run: () => Promise<T>): Promise<T> {
    state.queued++;
    const result = state.tail.then(run);
    state.tail = result.then(ignore, ignore).then(() => {
      state.queued--;
      // Nothing queued and nothing held: forget the folder (a store may put into many).
      if (state.queued === 0 && state.fd === undefined && this.folders.get(dir) === state) this.folders.delete(dir);
    });
    return result;
  }

  private async fsyncNow(dir: string, state: FolderState): Promise<void> {
    state.lastSync = ++this.syncsBegun;
    if (state.fd !== undefined) {
      try {
        await fsyncDescriptor(state.fd);
        return;
      } catch (err) {
        // Whatever failed, the next fsync starts from a fresh descriptor.
        await this.release(state).catch(ignore);
        throw err;
      }
    }
    const fd = await openFolder(dir);
    let failed = true;
    try {
      await fsyncDescriptor(fd);
      failed = false;
    } finally {
      if (!failed && this.holdFolders && (await this.reserveHold())) {
        state.fd = fd;
      } else {
        await closeDescriptor(fd).catch((err: unknown) => {
          if (!failed) throw err;
        });
      }
    }
  }

  /**
   * Counts one more folder held and answers true when one more may be, after letting go of the
   * least recently fsynced idle one if need be; false when all held ones are in use.
   */
  private async reserveHold(): Promise<boolean> {
    if (this.heldCount < HELD_FOLDERS_MAX) {
      this.heldCount++;
      return true;
    }
    let oldest: [string, FolderState] | undefined;
    for (const entry of this.folders) {
      const state = entry[1];
      // Idle only: no fsync or removal of it queued or running, so nothing uses its descriptor.
      if (state.fd === undefined || state.queued > 0) continue;
      if (oldest === undefined || state.lastSync < oldest[1].lastSync) oldest = entry;
    }
    if (oldest === undefined) return false;
    const [dir, state] = oldest;
    this.folders.delete(dir);
    const closing = this.release(state); // counts it let go of at once
    this.heldCount++;
    await closing.catch(ignore);
    return true;
  }

  private async release(state: FolderState): Promise<void> {
    const fd = state.fd;
    if (fd === undefined) return;
    state.fd = undefined;
    this.heldCount--;
    await closeDescriptor(fd).catch((err: unknown) => {
      if (errnoOf(err) !== 'EBADF') throw err;
    });
  }
}

/**
 * Reading LocalChunkStore's object files: opening one with its size (OpenFileCache keeps such
 * handles) and reading a range of it with pread, into the caller's array when it offers one.
 */
import fsCallbacks from 'node:fs';
import fs from 'node:fs/promises';
import { errnoOf } from './local-folder.js';
import type { OpenFile } from './open-file-cache.js';

/** The object file opened for reading with its size; undefined when there is no object (missing, or a folder). */
export async function openObject(file: string): Promise<OpenFile | undefined> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return undefined;
    throw err;
  }
  try {
    const stat = await handle.stat();
    if (stat.isFile()) return { handle, sizeBytes: stat.size };
  } catch (err) {
    await handle.close();
    throw err;
  }
  await handle.close();
  return undefined;
}

/** One pread through the callback API on the handle's descriptor (no FileHandle promise machinery). */
function preadInto(object: OpenFile, out: Uint8Array, filled: number, positionBytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsCallbacks.read(object.handle.fd, out, filled, out.length - filled, positionBytes, (err, bytesRead) => (err ? reject(err) : resolve(bytesRead)));
  });
}

/** `lengthBytes` at `offsetBytes` of an open object, cut short at its end. */
export async function readRange(object: OpenFile, offsetBytes: number, lengthBytes: number, checkAborted: () => void, into: Uint8Array | undefined): Promise<Uint8Array> {
  const wanted = Math.max(0, Math.min(lengthBytes, object.sizeBytes - offsetBytes));
  // The caller's array when it offers one (ChunkStoreCallOptions.into: a reused buffer spares a
  // new MiB per read and the full collections they drive). Otherwise not zero-filled (the read
  // overwrites it; a short read returns only what was filled) and never a slice of Node's shared
  // pool: zeroing cost ~65 us of the event loop per MiB read (issue 14).
  const out = into !== undefined && into.length >= lengthBytes ? into.subarray(0, wanted) : new Uint8Array(Buffer.allocUnsafeSlow(wanted).buffer);
  let filled = 0;
  while (filled < out.length) {
    checkAborted();
    const bytesRead = await preadInto(object, out, filled, offsetBytes + filled);
    if (bytesRead === 0) break; // cannot happen (objects are replaced by rename, never changed in place)
    filled += bytesRead;
  }
  return filled === out.length ? out : out.subarray(0, filled);
}

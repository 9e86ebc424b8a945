/**
 * The two directions LocalHostFile moves bytes in: which fs calls move one part of a request
 * (fs.read/fs.write for one buffer, fs.readv/fs.writev for several, and their synchronous forms),
 * what a call that moves nothing means, and what the request resolves with.
 */
import fs from 'node:fs';
import { remainingBuffers } from '../sys/iovec.js';

export type PartDone = (err: NodeJS.ErrnoException | null, bytes: number) => void;

/**
 * What differs between reading and writing: the calls that move one part (fs.read/fs.write for one
 * buffer, with no iovec array; fs.readv/fs.writev for several), what a call that moves nothing
 * means, and what the promise resolves with. LocalHostFile's transfer is the one loop for both.
 */
export interface Direction<T> {
  /** pread or pwrite; a 'v' is added for several buffers. */
  call: string;
  preposition: 'from' | 'to';
  writes: boolean;
  part(fd: number, bufs: readonly Uint8Array[], position: number, done: PartDone): void;
  partSync(fd: number, bufs: readonly Uint8Array[], position: number): number;
  /** A call moved nothing with `doneBytes` of the request moved. */
  endOfFile(bufs: readonly Uint8Array[], doneBytes: number): void;
  result(doneBytes: number): T;
}

/** The system call's name for error messages: pread or pwrite, preadv or pwritev for several buffers. */
export function callName(direction: Direction<unknown>, bufs: readonly Uint8Array[]): string {
  return bufs.length === 1 ? direction.call : `${direction.call}v`;
}

/** The fs calls of one direction (looked up at each call, so a test can stand in for them). */
interface PartCalls {
  one(fd: number, buf: Uint8Array, offset: number, length: number, position: number, done: PartDone): void;
  many(fd: number, bufs: readonly Uint8Array[], position: number, done: PartDone): void;
  oneSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  manySync(fd: number, bufs: readonly Uint8Array[], position: number): number;
}

function direction<T>(rules: Omit<Direction<T>, 'part' | 'partSync'>, calls: PartCalls): Direction<T> {
  const { one, many, oneSync, manySync } = calls;
  return {
    ...rules,
    part: (fd, bufs, position, done) => {
      if (bufs.length === 1) one(fd, bufs[0]!, 0, bufs[0]!.length, position, done);
      else many(fd, bufs, position, done);
    },
    partSync: (fd, bufs, position) => (bufs.length === 1 ? oneSync(fd, bufs[0]!, 0, bufs[0]!.length, position) : manySync(fd, bufs, position)),
  };
}

export const READ = direction<number>(
  {
    call: 'pread',
    preposition: 'from',
    writes: false,
    // The end of the file: the rest reads as zeroes.
    endOfFile: (bufs, doneBytes) => {
      for (const b of remainingBuffers(bufs, doneBytes)) b.fill(0);
    },
    result: (doneBytes) => doneBytes,
  },
  {
    one: (fd, buf, offset, length, position, done) => fs.read(fd, buf, offset, length, position, done),
    many: (fd, bufs, position, done) => fs.readv(fd, bufs, position, done),
    oneSync: (fd, buf, offset, length, position) => fs.readSync(fd, buf, offset, length, position),
    manySync: (fd, bufs, position) => fs.readvSync(fd, bufs, position),
  },
);

export const WRITE = direction<void>(
  {
    call: 'pwrite',
    preposition: 'to',
    writes: true,
    // No errno: the message says what happened (an IO_ERROR).
    endOfFile: () => {
      throw new Error('write made no progress (the system call wrote 0 bytes)');
    },
    result: () => undefined,
  },
  {
    one: (fd, buf, offset, length, position, done) => fs.write(fd, buf, offset, length, position, done),
    many: (fd, bufs, position, done) => fs.writev(fd, bufs, position, done),
    oneSync: (fd, buf, offset, length, position) => fs.writeSync(fd, buf, offset, length, position),
    manySync: (fd, bufs, position) => fs.writevSync(fd, bufs, position),
  },
);

/**
 * Byte streams for import and export: reading a file or stdin ('-') with a peek at its first
 * bytes (to tell qcow2 from raw), a regular file sent as a sparse stream (its holes neither read
 * nor sent), and writing a download to a file or to stdout. Downloads arrive as content pieces
 * (a sparse stream's data and zero runs, or plain bytes): a file, and stdout redirected to a file,
 * get the data at its offsets and stay sparse; a pipe gets the zero runs from one zero buffer.
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { fileSyscalls, SEEK_CUR, SEEK_SET } from '../../sys/file-syscalls.js';
import { libc, F_GETFL } from '../../sys/libc.js';
import { LocalHostFile } from '../../store/local-file.js';
import { filePieces } from '../../volume/content.js';
import { pieceLength, sharedZeroes, sparseRecords, type ContentPiece, type TransferEncoding } from '../../volume/sparse-stream.js';
import { CliError } from '../errors.js';
import { StdoutClosedError, checkStdoutOpen, isClosedPipe } from '../output.js';
import { EXIT } from './exits.js';
import { detectImageFormat, FORMAT_PEEK_BYTES, type DetectedFormat } from './image-formats.js';

export interface Source {
  /** The bytes, pulled on demand (back-pressure). */
  stream: Readable;
  /** Known for files, undefined for stdin. */
  sizeBytes: number | undefined;
  /** The format the first bytes show (image-formats.ts): raw, qcow2, or one Strata does not import. */
  detected: DetectedFormat;
  /** How `stream` carries the image: its bytes, or a sparse stream (sparse-stream.ts). */
  transfer: TransferEncoding;
  describe: string;
}

/**
 * Opens FILE or '-' (stdin) for upload; counts the image's bytes through onBytes as they are sent.
 * With `sparse`, a non-empty regular file is sent as a sparse stream: its holes (SEEK_HOLE) are
 * neither read nor sent.
 */
export async function openSource(file: string, onBytes: (n: number) => void, options: { sparse?: boolean } = {}): Promise<Source> {
  let input: AsyncIterator<Buffer>;
  let sizeBytes: number | undefined;
  let close: () => void = () => {};
  if (file === '-') {
    if (process.stdin.isTTY) {
      throw new CliError('refusing to read image data from a terminal', { hint: "pipe the data in, or name a file instead of '-'", exitCode: EXIT.USAGE });
    }
    input = (process.stdin as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  } else {
    let st: fs.Stats;
    try {
      st = fs.statSync(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new CliError(`cannot read '${file}': ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`, {
        hint: 'check the path',
        exitCode: code === 'ENOENT' ? EXIT.NOT_FOUND : EXIT.ERROR,
      });
    }
    if (st.isDirectory()) throw new CliError(`cannot read '${file}': it is a directory`, { hint: 'name an image file', exitCode: EXIT.USAGE });
    sizeBytes = st.isFile() ? st.size : undefined;
    if (options.sparse === true && sizeBytes !== undefined && sizeBytes > 0) return openSparseFile(file, sizeBytes, onBytes);
    const rs = fs.createReadStream(file, { highWaterMark: 1024 * 1024 });
    close = () => rs.destroy();
    input = (rs as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }
  // Peek at the first bytes without losing them.
  const head: Buffer[] = [];
  let headBytes = 0;
  while (headBytes < FORMAT_PEEK_BYTES) {
    const r = await input.next();
    if (r.done) break;
    head.push(r.value);
    headBytes += r.value.length;
  }
  const first = Buffer.concat(head);
  const detected = detectImageFormat(first);
  async function* chunks(): AsyncGenerator<Buffer> {
    try {
      if (first.length > 0) {
        onBytes(first.length);
        yield first;
      }
      for (;;) {
        const r = await input.next();
        if (r.done) return;
        onBytes(r.value.length);
        yield r.value;
      }
    } finally {
      close();
    }
  }
  return { stream: Readable.from(chunks(), { objectMode: false }), sizeBytes, detected, transfer: 'bytes', describe: file === '-' ? 'stdin' : `'${file}'` };
}

/**
 * The format to import Source as: the one given, else the detected raw or qcow2. A detected format
 * Strata does not import (image-formats.ts) is refused unless one was given (`--format raw` takes
 * its bytes as they are); the refusal names it and how to convert or decompress it.
 */
export function importFormat(source: Source, given: 'raw' | 'qcow2' | undefined, what: string, file: string, volume: string): 'raw' | 'qcow2' {
  if (given !== undefined) return given;
  const detected = source.detected;
  if (detected.format !== 'foreign') return detected.format;
  source.stream.destroy();
  throw new CliError(`${what}: it is ${detected.name}, not raw or qcow2`, { hint: detected.hint(file, volume), exitCode: EXIT.ERROR, code: 'INVALID_IMAGE' });
}

async function openSparseFile(file: string, sizeBytes: number, onBytes: (n: number) => void): Promise<Source> {
  let opened: LocalHostFile;
  try {
    opened = await LocalHostFile.open(file, { readOnly: true });
  } catch (err) {
    throw new CliError(`cannot read '${file}': ${(err as Error).message}`, { hint: 'check the path and its permissions', exitCode: EXIT.ERROR });
  }
  const first = new Uint8Array(Math.min(FORMAT_PEEK_BYTES, sizeBytes));
  await opened.pread(first, 0);
  async function* counted(): AsyncGenerator<ContentPiece, void, undefined> {
    try {
      for await (const piece of filePieces(opened, sizeBytes)) {
        onBytes(pieceLength(piece));
        yield piece;
      }
    } finally {
      await opened.close();
    }
  }
  const stream = Readable.from(sparseRecords(counted(), sizeBytes), { objectMode: false });
  return { stream, sizeBytes, detected: detectImageFormat(first), transfer: 'sparse', describe: `'${file}'` };
}

const BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/** A download's bytes as content pieces (for a body sent as plain bytes). */
export async function* bytePieces(source: AsyncIterable<Uint8Array>): AsyncGenerator<ContentPiece, void, undefined> {
  let offset = 0;
  for await (const bytes of source) {
    yield { kind: 'data', offset, bytes };
    offset += bytes.length;
  }
}

/**
 * Positional writes into a file that reads zeroes past `baseOffset` (new, or truncated there):
 * data goes to baseOffset + its offset with its all-zero 4 KiB blocks skipped, and zero runs are
 * skipped altogether, so the file stays sparse. finish() sets the length.
 */
class SparseFileWriter {
  constructor(
    private readonly fd: number,
    private readonly baseOffset: number,
  ) {}

  async write(piece: ContentPiece): Promise<void> {
    if (piece.kind === 'zero') return;
    const chunk = Buffer.from(piece.bytes.buffer, piece.bytes.byteOffset, piece.bytes.byteLength);
    const offset = this.baseOffset + piece.offset;
    let pos = 0;
    while (pos < chunk.length) {
      // Blocks are aligned to the absolute offset, so zero detection sees whole blocks.
      const blockEnd = Math.min(chunk.length, pos + (BLOCK - ((offset + pos) % BLOCK)));
      if (isZeroBlock(chunk.subarray(pos, blockEnd))) {
        pos = blockEnd;
        continue;
      }
      let runEnd = blockEnd;
      while (runEnd < chunk.length) {
        const next = Math.min(chunk.length, runEnd + BLOCK);
        if (isZeroBlock(chunk.subarray(runEnd, next))) break;
        runEnd = next;
      }
      await writeAll(this.fd, chunk.subarray(pos, runEnd), offset + pos);
      pos = runEnd;
    }
  }

  /** Sets the file's length to the end of the content (the zero runs at the end become a hole). */
  finish(contentBytes: number): void {
    fs.ftruncateSync(this.fd, this.baseOffset + contentBytes);
  }
}

/** Feeds the pieces to write() in order; returns the content's length. */
async function drain(pieces: AsyncIterable<ContentPiece>, write: (piece: ContentPiece) => Promise<void>, onBytes: (n: number) => void): Promise<number> {
  let total = 0;
  for await (const piece of pieces) {
    await write(piece);
    const n = pieceLength(piece);
    total += n;
    onBytes(n);
  }
  return total;
}

/**
 * Writes the content to a new file, sparse: zero runs and all-zero 4 KiB blocks are not written,
 * and the file is sized at the end. Removes the file when anything fails.
 */
export async function writeSparseFile(file: string, pieces: AsyncIterable<ContentPiece>, overwrite: boolean, onBytes: (n: number) => void): Promise<number> {
  let fd: number;
  try {
    fd = fs.openSync(file, overwrite ? 'w' : 'wx', 0o644);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new CliError(`'${file}' already exists`, { hint: 'choose another file, or pass --force to overwrite it', exitCode: EXIT.CONFLICT });
    throw new CliError(`cannot create '${file}': ${(err as Error).message}`, { hint: 'check the path and its permissions', exitCode: EXIT.ERROR });
  }
  try {
    const writer = new SparseFileWriter(fd, 0);
    const total = await drain(pieces, (piece) => writer.write(piece), onBytes);
    writer.finish(total);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    return total;
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
    throw err;
  }
}

function isZeroBlock(piece: Buffer): boolean {
  return piece.equals(piece.length === BLOCK ? ZERO_BLOCK : ZERO_BLOCK.subarray(0, piece.length));
}

function writeAll(fd: number, buf: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (done: number): void => {
      if (done >= buf.length) {
        resolve();
        return;
      }
      fs.write(fd, buf, done, buf.length - done, position + done, (err, written) => {
        if (err) reject(err);
        else step(done + written);
      });
    };
    step(0);
  });
}

const STDOUT_FD = 1;

/**
 * Where stdout's content starts when stdout is a regular file that can be written sparsely: not
 * in append mode, and holding nothing at or past its offset (`> file` truncated it), so skipped
 * ranges read as zeroes. undefined for pipes, terminals, sockets, or when that cannot be told.
 */
function sparseStdoutOffset(): number | undefined {
  try {
    const sys = fileSyscalls();
    if (sys === null || !fs.fstatSync(STDOUT_FD).isFile()) return undefined;
    const flags = libc().fcntl(STDOUT_FD, F_GETFL, 0);
    if (flags < 0 || (flags & fs.constants.O_APPEND) !== 0) return undefined;
    const offset = sys.lseek(STDOUT_FD, 0, SEEK_CUR);
    if (offset < 0 || fs.fstatSync(STDOUT_FD).size > offset) return undefined;
    return offset;
  } catch {
    return undefined;
  }
}

/**
 * Writes the content to stdout. When stdout is a regular file (`- > file`) it is written sparsely
 * like writeSparseFile, and stdout's offset ends after the content; otherwise (a pipe) zero runs
 * go out as large writes of one shared zero buffer, with back-pressure.
 */
export async function writeStdout(pieces: AsyncIterable<ContentPiece>, onBytes: (n: number) => void): Promise<number> {
  const baseOffset = sparseStdoutOffset();
  if (baseOffset !== undefined) {
    const writer = new SparseFileWriter(STDOUT_FD, baseOffset);
    const total = await drain(pieces, (piece) => writer.write(piece), onBytes);
    writer.finish(total);
    // Whoever writes to the same stdout next (`{ strata ...; echo; } > file`) continues after it.
    if (fileSyscalls()!.lseek(STDOUT_FD, baseOffset + total, SEEK_SET) < 0) throw new Error('cannot move the offset of stdout past the export');
    return total;
  }
  return drain(
    pieces,
    async (piece) => {
      if (piece.kind === 'data') {
        await writeOut(piece.bytes);
        return;
      }
      const zeroes = sharedZeroes();
      for (let left = piece.length; left > 0; ) {
        const n = Math.min(left, zeroes.length);
        await writeOut(zeroes.subarray(0, n));
        left -= n;
      }
    },
    onBytes,
  );
}

/**
 * One write to stdout, waiting for it to drain when its buffer is full; StdoutClosedError once the
 * reader has gone (output.ts: the command then ends quietly, like any other output to a closed pipe).
 */
async function writeOut(chunk: Uint8Array): Promise<void> {
  checkStdoutOpen();
  const out = process.stdout;
  if (out.write(chunk)) return;
  // A write to a stream that errored meanwhile returns false and never drains.
  checkStdoutOpen();
  await new Promise<void>((resolve, reject) => {
    const onDrain = () => {
      out.off('error', onError);
      resolve();
    };
    const onError = (err: Error) => {
      out.off('drain', onDrain);
      reject(isClosedPipe(err) ? new StdoutClosedError() : err);
    };
    out.once('drain', onDrain);
    out.once('error', onError);
  });
}

/**
 * Byte streams for import and export: reading a file or stdin ('-') with a peek at its first
 * bytes (to tell qcow2 from raw), and writing a download to a file (sparse: all-zero blocks are
 * skipped, the file is sized at the end) or to stdout.
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';
import { CliError } from '../errors.js';
import { EXIT } from './exits.js';

const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);

export interface Source {
  /** The bytes, pulled on demand (back-pressure). */
  stream: Readable;
  /** Known for files, undefined for stdin. */
  sizeBytes: number | undefined;
  /** The format the first bytes show. */
  detectedFormat: 'raw' | 'qcow2';
  describe: string;
}

/** Opens FILE or '-' (stdin) for upload; counts bytes through onBytes as they are sent. */
export async function openSource(file: string, onBytes: (n: number) => void): Promise<Source> {
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
    const rs = fs.createReadStream(file, { highWaterMark: 1024 * 1024 });
    close = () => rs.destroy();
    input = (rs as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }
  // Peek at the first bytes without losing them.
  const head: Buffer[] = [];
  let headBytes = 0;
  while (headBytes < QCOW2_MAGIC.length) {
    const r = await input.next();
    if (r.done) break;
    head.push(r.value);
    headBytes += r.value.length;
  }
  const first = Buffer.concat(head);
  const detectedFormat = first.subarray(0, 4).equals(QCOW2_MAGIC) ? 'qcow2' : 'raw';
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
  return { stream: Readable.from(chunks(), { objectMode: false }), sizeBytes, detectedFormat, describe: file === '-' ? 'stdin' : `'${file}'` };
}

const BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(BLOCK);

/**
 * Writes a byte stream to a new file, skipping all-zero 4 KiB blocks (the file stays sparse) and
 * setting its length at the end. Removes the file when anything fails.
 */
export async function writeSparseFile(file: string, source: AsyncIterable<Uint8Array>, overwrite: boolean, onBytes: (n: number) => void): Promise<number> {
  let fd: number;
  try {
    fd = fs.openSync(file, overwrite ? 'w' : 'wx', 0o644);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new CliError(`'${file}' already exists`, { hint: 'choose another file, or pass --force to overwrite it', exitCode: EXIT.CONFLICT });
    throw new CliError(`cannot create '${file}': ${(err as Error).message}`, { hint: 'check the path and its permissions', exitCode: EXIT.ERROR });
  }
  let offset = 0;
  try {
    for await (const raw of source) {
      const chunk = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
      let pos = 0;
      while (pos < chunk.length) {
        // Blocks are aligned to the absolute offset, so zero detection sees whole blocks.
        const blockEnd = Math.min(chunk.length, pos + (BLOCK - ((offset + pos) % BLOCK)));
        if (isZero(chunk.subarray(pos, blockEnd))) {
          pos = blockEnd;
          continue;
        }
        let runEnd = blockEnd;
        while (runEnd < chunk.length) {
          const next = Math.min(chunk.length, runEnd + BLOCK);
          if (isZero(chunk.subarray(runEnd, next))) break;
          runEnd = next;
        }
        await writeAll(fd, chunk.subarray(pos, runEnd), offset + pos);
        pos = runEnd;
      }
      offset += chunk.length;
      onBytes(chunk.length);
    }
    fs.ftruncateSync(fd, offset);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    return offset;
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(file, { force: true });
    throw err;
  }
}

function isZero(piece: Buffer): boolean {
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

/** Writes a byte stream to stdout with back-pressure. */
export async function writeStdout(source: AsyncIterable<Uint8Array>, onBytes: (n: number) => void): Promise<number> {
  let total = 0;
  const out = process.stdout;
  for await (const chunk of source) {
    total += chunk.length;
    onBytes(chunk.length);
    if (!out.write(chunk)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          out.off('error', onError);
          resolve();
        };
        const onError = (err: Error) => {
          out.off('drain', onDrain);
          reject(err);
        };
        out.once('drain', onDrain);
        out.once('error', onError);
      });
    }
  }
  return total;
}

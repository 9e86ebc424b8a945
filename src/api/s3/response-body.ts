/**
 * A response body fastify sends as a stream, written to the response by hand so that each piece's
 * write callback can give its array back for reuse (releaseRunBuffer: a GET's runs are read into
 * reused arrays, run-buffers.ts). Readable.from piped into the response hid when the socket was
 * done with a piece, so every MiB served was a new array and drove full garbage collections.
 *
 * fastify calls `pipe(res)` and watches this stream's end (or error); `pipe` here writes the
 * pieces itself: up to READ_AHEAD_BYTES queued on the response before it waits for 'drain' (so a
 * 1 MiB object ends without waiting for the socket, as the 2 MiB read-ahead did before), the
 * response ended after the last piece, this stream ended then (or destroyed with the source's
 * error: before the first byte fastify answers it as an error, after it the response is cut).
 */
import { Readable, type Writable } from 'node:stream';
import { releaseRunBuffer } from '../../objects/run-buffers.js';

/** Bytes queued on the response before the next piece waits for the socket to drain. */
const READ_AHEAD_BYTES = 2 * 1024 * 1024;

export class ResponseBody extends Readable {
  private piped = false;
  /** Wakes a write loop waiting for 'drain' when this stream is destroyed (the client went away). */
  private wake: (() => void) | undefined;

  constructor(private readonly source: AsyncIterable<Uint8Array>) {
    super();
  }

  override _read(): void {
    // The pieces go to the response in pipe(), not through this stream's buffer.
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.wake?.();
    callback(error);
  }

  override pipe<T extends NodeJS.WritableStream>(destination: T): T {
    if (this.piped) throw new Error('a response body is written to one response');
    this.piped = true;
    void this.writeAll(destination as unknown as Writable);
    return destination;
  }

  private async writeAll(response: Writable): Promise<void> {
    try {
      for await (const piece of this.source) {
        if (this.destroyed || response.destroyed) return; // leaving the loop ends the source's reads
        // Given back only once written: a piece still queued must not be read into again.
        response.write(piece, (err) => {
          if (err === null || err === undefined) releaseRunBuffer(piece);
        });
        if (response.writableLength > READ_AHEAD_BYTES) await this.drained(response);
      }
      if (this.destroyed || response.destroyed) return;
      response.end();
      this.push(null);
      this.resume(); // 'end' is emitted once the (empty) buffer is read
    } catch (err) {
      this.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Resolves on the response's 'drain', its close, or this stream's destruction. */
  private drained(response: Writable): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        response.off('drain', done);
        response.off('close', done);
        this.wake = undefined;
        resolve();
      };
      this.wake = done;
      response.on('drain', done);
      response.on('close', done);
    });
  }
}

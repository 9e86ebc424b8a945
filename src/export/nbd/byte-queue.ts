/**
 * A FIFO of the chunks an NBD connection received, kept until a whole header or payload is there;
 * take(n) avoids copying when the bytes lie in one chunk.
 */
export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0;
  length = 0;

  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }

  take(n: number): Buffer {
    const first = this.chunks[0];
    if (first === undefined) return Buffer.alloc(0);
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(first, n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    this.takeInto(out);
    return out;
  }

  /** Moves up to out.length buffered bytes into out; returns how many. */
  takeInto(out: Uint8Array): number {
    let filled = 0;
    while (filled < out.length) {
      const c = this.chunks[0];
      if (c === undefined) break;
      const k = Math.min(c.length - this.head, out.length - filled);
      c.copy(out, filled, this.head, this.head + k);
      filled += k;
      this.advance(c, k);
    }
    return filled;
  }

  private advance(chunk: Buffer, n: number): void {
    this.head += n;
    this.length -= n;
    if (this.head === chunk.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.length = 0;
  }
}

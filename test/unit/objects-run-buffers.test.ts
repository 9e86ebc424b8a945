/**
 * run-buffers.ts: a GET's run arrays are reused once given back, only arrays it lent are taken
 * back, each once; and ResponseBody (the S3 response writer) gives each piece back once a real
 * HTTP response has written it, with every byte arriving in order.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { ResponseBody } from '../../src/api/s3/response-body.js';
import { freeRunBufferCount, releaseRunBuffer, takeRunBuffer } from '../../src/objects/run-buffers.js';

const SIZE_BYTES = 256 * 1024 + 17; // a size no other test takes

describe('run buffers', () => {
  it('an array given back is handed out again; arrays not lent and second releases are ignored', () => {
    const first = takeRunBuffer(SIZE_BYTES);
    expect(first.length).toBe(SIZE_BYTES);
    expect(freeRunBufferCount(SIZE_BYTES)).toBe(0);
    releaseRunBuffer(first.subarray(100, 200));
    expect(freeRunBufferCount(SIZE_BYTES)).toBe(1);
    releaseRunBuffer(first);
    expect(freeRunBufferCount(SIZE_BYTES)).toBe(1);
    releaseRunBuffer(new Uint8Array(SIZE_BYTES));
    expect(freeRunBufferCount(SIZE_BYTES)).toBe(1);
    const again = takeRunBuffer(SIZE_BYTES);
    expect(again.buffer).toBe(first.buffer);
    expect(freeRunBufferCount(SIZE_BYTES)).toBe(0);
  });

  it('ResponseBody writes every piece in order to a real HTTP response and gives each back once written', async () => {
    const sizeBytes = SIZE_BYTES + 1; // its own size: this test counts what comes back
    const pieces = Array.from({ length: 24 }, (_, i) => {
      const piece = takeRunBuffer(sizeBytes);
      piece.fill(i);
      return piece;
    });
    async function* source(): AsyncGenerator<Uint8Array> {
      for (const piece of pieces) yield piece;
    }
    const server: Server = createServer((_req, res) => {
      res.setHeader('content-length', String(pieces.length * sizeBytes));
      new ResponseBody(source()).pipe(res);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const response = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`);
      const body = new Uint8Array(await response.arrayBuffer());
      expect(body.length).toBe(pieces.length * sizeBytes);
      for (let i = 0; i < pieces.length; i++) {
        const piece = body.subarray(i * sizeBytes, (i + 1) * sizeBytes);
        expect(piece.every((byte) => byte === i)).toBe(true);
      }
      expect(freeRunBufferCount(sizeBytes)).toBe(pieces.length);
    } finally {
      server.close();
    }
  });
});

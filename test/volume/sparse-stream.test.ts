/**
 * The sparse stream (src/volume/sparse-stream.ts): what the encoder sends for data, zero data and
 * zero runs, that decoding gives back the same bytes, that malformed streams are refused with
 * INVALID_ARGUMENT, and that the service imports and exports it exactly (qemu-img compare).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RECORD_HEADER_BYTES } from '../../src/volume/diff-stream.js';
import { encodeSparseHeader, plainBytes, readSparseStream, sparseRecords, type ContentPiece } from '../../src/volume/sparse-stream.js';
import { qemuImg, requireTool } from '../support/tools.js';
import { expectCode, makeEnv, MiB, pattern } from './helpers.js';

async function* from<T>(items: readonly T[]): AsyncGenerator<T, void, undefined> {
  for (const item of items) yield item;
}

async function collect(source: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of source) parts.push(Buffer.from(chunk));
  return Buffer.concat(parts);
}

function record(kind: 'd' | 'z' | 'e', offset: number, length: number, data?: Uint8Array): Buffer {
  const head = Buffer.alloc(RECORD_HEADER_BYTES);
  head[0] = kind.charCodeAt(0);
  head.writeBigUInt64BE(BigInt(offset), 1);
  head.writeBigUInt64BE(BigInt(length), 9);
  return data === undefined ? head : Buffer.concat([head, data]);
}

/** Decodes a sparse stream into the bytes it describes. */
async function decode(stream: Uint8Array): Promise<Buffer> {
  const { sizeBytes, pieces } = await readSparseStream(from([stream]));
  const out = Buffer.alloc(sizeBytes);
  for await (const piece of pieces) if (piece.kind === 'data') out.set(piece.bytes, piece.offset);
  return out;
}

describe('sparse stream', () => {
  const data = pattern(3000, 1);
  const pieces: ContentPiece[] = [
    { kind: 'zero', offset: 0, length: 4096 },
    { kind: 'zero', offset: 4096, length: 4096 },
    { kind: 'data', offset: 8192, bytes: data },
    { kind: 'data', offset: 11192, bytes: new Uint8Array(5000) }, // allocated zeroes
    { kind: 'zero', offset: 16192, length: 100 },
  ];
  const sizeBytes = 16292;

  it('names zero runs (merged, and data that is all zeroes) and sends only the data', async () => {
    const stream = await collect(sparseRecords(from(pieces), sizeBytes));
    const expected = Buffer.concat([encodeSparseHeader(sizeBytes), record('z', 0, 8192), record('d', 8192, 3000, data), record('z', 11192, 5100), record('e', 0, 0)]);
    expect(stream.equals(expected)).toBe(true);
    const bytes = await decode(stream);
    const plain = await collect(plainBytes(from(pieces)));
    expect(plain.length).toBe(sizeBytes);
    expect(bytes.equals(plain)).toBe(true);
    expect(bytes.subarray(8192, 11192).equals(data)).toBe(true);
  });

  it('refuses streams whose records leave gaps, overlap, run short, stop early or carry trailing bytes', async () => {
    const header = encodeSparseHeader(8192);
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.concat([header, record('z', 0, 4096), record('z', 5000, 3192), record('e', 0, 0)]), /does not start where the previous one ended \(4096\)/],
      [Buffer.concat([header, record('z', 0, 4096), record('z', 0, 8192), record('e', 0, 0)]), /does not start where the previous one ended/],
      [Buffer.concat([header, record('z', 0, 4096), record('e', 0, 0)]), /the records end at 4096, short of the size 8192/],
      [Buffer.concat([header, record('z', 0, 8192)]), /ends without its end record/],
      [Buffer.concat([header, record('d', 0, 8192, new Uint8Array(100))]), /ends inside a data record/],
      [Buffer.concat([header, record('z', 0, 8192), record('e', 0, 0), Buffer.from('x')]), /bytes follow the end record/],
      [Buffer.concat([header, record('z', 0, 9000), record('e', 0, 0)]), /lies past the end \(8192\)/],
      [Buffer.concat([Buffer.from('{"format":"strata-diff","version":1,"sizeBytes":8192}\n'), record('e', 0, 0)]), /format is not "strata-sparse"/],
    ];
    for (const [stream, message] of cases) {
      await expectCode(decode(stream), 'INVALID_ARGUMENT', new RegExp(`^invalid sparse stream: .*${message.source}`));
    }
  });
});

describe.skipIf(!requireTool('qemu-img'))('sparse import and export through the service', () => {
  it('imports raw and qcow2 from sparse streams and exports them back exactly; a malformed stream leaves no volume', async () => {
    const env = await makeEnv();
    await env.service.createPool('p');
    const sizeBytes = 64 * MiB + 512;
    const image = Buffer.alloc(sizeBytes);
    const writes = [
      { offset: 100, bytes: pattern(70_000, 2) },
      { offset: 33 * MiB, bytes: pattern(MiB + 7, 3) },
      { offset: sizeBytes - 5000, bytes: pattern(5000, 4) },
    ];
    for (const w of writes) image.set(w.bytes, w.offset);
    const source: ContentPiece[] = [];
    let pos = 0;
    for (const w of writes) {
      if (w.offset > pos) source.push({ kind: 'zero', offset: pos, length: w.offset - pos });
      source.push({ kind: 'data', offset: w.offset, bytes: w.bytes });
      pos = w.offset + w.bytes.length;
    }
    const rawFile = path.join(env.dir, 'expected.raw');
    fs.writeFileSync(rawFile, image);

    const imported = await env.service.importVolume('p', 'v', sparseRecords(from(source), sizeBytes), { format: 'raw', transfer: 'sparse' });
    expect(imported.provisionedBytes).toBe(sizeBytes);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', rawFile, imported.location!]).code).toBe(0);

    for (const format of ['raw', 'qcow2'] as const) {
      const { sizeBytes: length, stream } = await env.service.exportVolume('p', 'v', { format, transfer: 'sparse' });
      const out = path.join(env.dir, `out.${format}`);
      fs.writeFileSync(out, await decode(await collect(stream)));
      expect(fs.statSync(out).size).toBe(length);
      expect(qemuImg(['compare', '-f', 'raw', '-F', format, rawFile, out]).code).toBe(0);
    }
    // The qcow2 export, imported back from a sparse stream of its file.
    const { stream: qcow2 } = await env.service.exportVolume('p', 'v', { format: 'qcow2', transfer: 'sparse' });
    const again = await env.service.importVolume('p', 'again', qcow2, { format: 'qcow2', transfer: 'sparse' });
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', rawFile, again.location!]).code).toBe(0);

    const broken = Buffer.concat([encodeSparseHeader(8192), record('z', 0, 4096), record('e', 0, 0)]);
    await expectCode(env.service.importVolume('p', 'broken', from([broken]), { format: 'raw', transfer: 'sparse' }), 'INVALID_ARGUMENT', /short of the size/);
    await expectCode(env.service.volumeInfo('p', 'broken'), 'NOT_FOUND');
  });
});

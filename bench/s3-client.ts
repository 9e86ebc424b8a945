/**
 * What the S3 benches share: the SDK client as they configure it, the objects' bytes, and a
 * Strata daemon's bench user with its key (bench/s3-bench.ts, bench/s3-put-profile.ts).
 */
import { execFileSync } from 'node:child_process';
import { Agent } from 'node:http';
import { Readable } from 'node:stream';
import { S3Client } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { strataEnv, type StrataDaemon } from './strata-daemon.js';

const MiB = 1024 * 1024;
const BLOCK_BYTES = 64 * 1024;
/** A body larger than this streams in pieces of this size. */
export const PIECE_BYTES = MiB;
/** How long a request may see no bytes move before it fails. */
const S3_IDLE_TIMEOUT_MS = 120_000;

/** The bench's client: path style, checksums only when required (radosgw 16 refuses the SDK's trailer checksums). */
export function s3ClientFor(endpoint: string, accessKeyId: string, secretAccessKey: string): S3Client {
  return new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId, secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // The SDK's default retries: a keep-alive socket the server closed while idle is retried, as in real use.
    // A server that stops answering (radosgw whose memstore OSD exited) fails the run after two
    // idle minutes instead of hanging the bench.
    // throwOnRequestTimeout: without it the handler only warns and the request waits on forever.
    requestHandler: new NodeHttpHandler({ httpAgent: new Agent({ keepAlive: true, maxSockets: 64 }), requestTimeout: S3_IDLE_TIMEOUT_MS, throwOnRequestTimeout: true }),
  });
}

/** The object's bytes, made unique per 64 KiB block by a stamp (object id, block index) over shared random bytes. */
function stamped(base: Buffer, objectId: number, offsetBytes: number, lengthBytes: number): Buffer {
  const out = Buffer.allocUnsafe(lengthBytes);
  base.copy(out, 0, 0, lengthBytes);
  for (let at = 0; at < lengthBytes; at += BLOCK_BYTES) {
    if (at + 8 > lengthBytes) break;
    out.writeUInt32LE(objectId, at);
    out.writeUInt32LE((offsetBytes + at) / BLOCK_BYTES, at + 4);
  }
  return out;
}

/** An object's body (`base`: PIECE_BYTES of random bytes): nothing in it dedups with another object's. */
export function objectBody(base: Buffer, objectId: number, sizeBytes: number): Buffer | Readable {
  if (sizeBytes <= PIECE_BYTES) return stamped(base, objectId, 0, sizeBytes);
  // Large objects stream in 1 MiB pieces: the bench holds no 256 MiB buffer per worker.
  let offset = 0;
  return new Readable({
    read() {
      if (offset >= sizeBytes) return void this.push(null);
      const length = Math.min(PIECE_BYTES, sizeBytes - offset);
      this.push(stamped(base, objectId, offset, length));
      offset += length;
    },
  });
}

/** Runs a Strata CLI command against `daemon` with `bin`'s build; its stdout. */
export function strataCliOutput(daemon: StrataDaemon, bin: string, args: readonly string[]): string {
  return execFileSync(process.execPath, [bin, ...args], { env: strataEnv(daemon), encoding: 'utf8' });
}

/** Creates the user `name` on `daemon` and one access key of it. */
export function strataUserKey(daemon: StrataDaemon, bin: string, name: string): { id: string; secret: string } {
  strataCliOutput(daemon, bin, ['user', 'create', name]);
  return JSON.parse(strataCliOutput(daemon, bin, ['user', 'key', 'create', name, '--json'])) as { id: string; secret: string };
}

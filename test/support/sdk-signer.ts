/**
 * The AWS SDK's own SigV4 signer (@smithy/signature-v4, installed with @aws-sdk/client-s3) set up
 * with node:crypto, for tests that sign or presign requests the way the SDK does.
 */
import { createHash, createHmac, type Hash, type Hmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';

type SourceData = string | ArrayBuffer | ArrayBufferView;

function bytes(data: SourceData): string | Uint8Array {
  if (typeof data === 'string') return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** node:crypto SHA-256 / HMAC-SHA-256 in the shape the signer takes (what @smithy/hash-node does). */
export class NodeSha256 {
  private hash: Hash | Hmac;
  constructor(private readonly secret?: SourceData) {
    this.hash = this.fresh();
  }
  private fresh(): Hash | Hmac {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', bytes(this.secret));
  }
  update(data: SourceData): void {
    this.hash.update(bytes(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.hash.digest());
  }
  reset(): void {
    this.hash = this.fresh();
  }
}

export function sdkSigner(key: { id: string; secret: string }, region = 'us-east-1'): SignatureV4 {
  return new SignatureV4({ service: 's3', region, credentials: { accessKeyId: key.id, secretAccessKey: key.secret }, sha256: NodeSha256, uriEscapePath: false });
}

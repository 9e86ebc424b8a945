/**
 * Reads a GetObject body whole, and refuses a short one: a response that ends before its
 * Content-Length (a dropped connection, a proxy that gave up) throws TruncatedBodyError, which the
 * retry loop retries, so a cut-short body is never returned as data.
 */
import { TruncatedBodyError } from './failure.js';

function isAsyncIterable(value: unknown): value is AsyncIterable<Uint8Array> & { destroy?: (err?: Error) => void } {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}

/**
 * The body's bytes; `expectedBytes` is the response's Content-Length (undefined when it had none).
 * When `signal` aborts, the stream is destroyed and the read rejects.
 */
export async function readWholeBody(body: unknown, expectedBytes: number | undefined, signal: AbortSignal, what: string): Promise<Uint8Array> {
  if (body === undefined || body === null) {
    if (expectedBytes === undefined || expectedBytes === 0) return new Uint8Array(0);
    throw new TruncatedBodyError(`${what}: the response had no body, but a Content-Length of ${expectedBytes}`);
  }
  if (!isAsyncIterable(body)) throw new TypeError(`${what}: the response body is not a stream`);
  const onAbort = (): void => body.destroy?.(new Error('aborted by the S3 store'));
  signal.addEventListener('abort', onAbort, { once: true });
  const chunks: Uint8Array[] = [];
  let receivedBytes = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk);
      receivedBytes += chunk.byteLength;
      if (expectedBytes !== undefined && receivedBytes > expectedBytes) {
        throw new TruncatedBodyError(`${what}: the response body is longer than its Content-Length of ${expectedBytes}`);
      }
    }
  } catch (err) {
    if (signal.aborted || err instanceof TruncatedBodyError) throw err;
    throw new TruncatedBodyError(`${what}: the response body broke off after ${receivedBytes} bytes`, { cause: err });
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
  if (expectedBytes !== undefined && receivedBytes !== expectedBytes) {
    throw new TruncatedBodyError(`${what}: the response body has ${receivedBytes} bytes of its Content-Length of ${expectedBytes}`);
  }
  // A plain array of its own: Node's chunks may be views into larger pooled buffers.
  const whole = new Uint8Array(receivedBytes);
  let offset = 0;
  for (const chunk of chunks) {
    whole.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return whole;
}

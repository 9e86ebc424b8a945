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
 * When `signal` aborts, the stream is destroyed and the read rejects. With `into` (at least
 * Content-Length bytes) the body is written there and the answer is a view of it.
 */
export async function readWholeBody(body: unknown, expectedBytes: number | undefined, signal: AbortSignal, what: string, into?: Uint8Array): Promise<Uint8Array> {
  if (body === undefined || body === null) {
    if (expectedBytes === undefined || expectedBytes === 0) return new Uint8Array(0);
    throw new TruncatedBodyError(`${what}: the response had no body, but a Content-Length of ${expectedBytes}`);
  }
  if (!isAsyncIterable(body)) throw new TypeError(`${what}: the response body is not a stream`);
  const onAbort = (): void => body.destroy?.(new Error('aborted by the S3 store'));
  signal.addEventListener('abort', onAbort, { once: true });
  // With a Content-Length the bytes go straight into one array of that size as they arrive (each
  // network buffer is free once copied, and no second pass); without one, they are joined at the
  // end. Not zeroed first: every byte is written or the read throws. A plain Uint8Array over its
  // own memory, not a Buffer, whose slice() would be a view.
  // `into`: the caller's array to fill when the body fits (ChunkStoreCallOptions.into).
  const whole =
    expectedBytes === undefined
      ? undefined
      : into !== undefined && into.length >= expectedBytes
        ? into.subarray(0, expectedBytes)
        : new Uint8Array(Buffer.allocUnsafeSlow(expectedBytes).buffer, 0, expectedBytes);
  const chunks: Uint8Array[] = [];
  let receivedBytes = 0;
  try {
    for await (const chunk of body) {
      if (expectedBytes !== undefined && receivedBytes + chunk.byteLength > expectedBytes) {
        throw new TruncatedBodyError(`${what}: the response body is longer than its Content-Length of ${expectedBytes}`);
      }
      if (whole === undefined) chunks.push(chunk);
      else whole.set(chunk, receivedBytes);
      receivedBytes += chunk.byteLength;
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
  if (whole !== undefined) return whole;
  // A plain array of its own: Node's chunks may be views into larger pooled buffers.
  const joined = new Uint8Array(receivedBytes);
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return joined;
}

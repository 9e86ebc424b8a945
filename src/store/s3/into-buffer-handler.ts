/**
 * The S3 client's request handler: the SDK's NodeHttpHandler for every request, except a GET sent
 * with a `bodyTarget` (S3ChunkStore's ranged GETs into a caller's array, the cold tier's part
 * reads), which goes over the store's own HTTP/1.1 connections (http1-connection.ts) and has its
 * 2xx body read straight into the target array. The request is the SDK's own: built, signed and
 * its answer parsed by the SDK's middleware (errors keep their codes and statuses), and the store's
 * retry loop, attempt timer and abort work as for any other request. Only plain http:// endpoints
 * take this path (https:// ones use NodeHttpHandler).
 */
import { Readable } from 'node:stream';
// The SDK's own query builder (what NodeHttpHandler sends): the path sent is the one signed.
import { buildQueryString } from '@smithy/core/protocols';
import type { NodeHttpHandler } from '@smithy/node-http-handler';
import { Http1Connection } from './http1-connection.js';

type HandlerRequest = Parameters<NodeHttpHandler['handle']>[0];
type HandlerOptions = NonNullable<Parameters<NodeHttpHandler['handle']>[1]>;
type HandlerResponse = Awaited<ReturnType<NodeHttpHandler['handle']>>['response'];
type HandlerConfig = ReturnType<NodeHttpHandler['httpHandlerConfigs']>;

/** Where a GET's body may go; `bytes` is set when the body was written there. */
export interface BodyTarget {
  readonly into: Uint8Array;
  bytes: number | undefined;
}

/** The send options that carry a body target through the SDK to the handler (passed on unchanged). */
export interface IntoBufferSendOptions {
  readonly abortSignal: AbortSignal;
  readonly bodyTarget: BodyTarget;
}

/** Idle kept-alive connections kept per host. */
const IDLE_CONNECTIONS_MAX = 64;

function hasTarget(options: HandlerOptions | undefined): options is HandlerOptions & { bodyTarget: BodyTarget } {
  return typeof options === 'object' && options !== null && 'bodyTarget' in options && typeof options.bodyTarget === 'object' && options.bodyTarget !== null;
}

export class IntoBufferHttpHandler {
  readonly metadata = { handlerProtocol: 'http/1.1' };
  private readonly idle = new Map<string, Http1Connection[]>();
  private readonly open = new Set<Http1Connection>();
  private destroyed = false;
  /** Requests whose body went straight into a caller's array (for tests and diagnostics). */
  intoRequests = 0;

  constructor(
    private readonly fallback: NodeHttpHandler,
    private readonly connectTimeoutMs: number,
  ) {}

  handle(request: HandlerRequest, options?: HandlerOptions): Promise<{ response: HandlerResponse }> {
    if (!hasTarget(options) || request.protocol !== 'http:' || request.method !== 'GET' || (request.body !== undefined && request.body !== null) || this.destroyed) {
      return this.fallback.handle(request, options);
    }
    return this.handleInto(request, options.abortSignal as AbortSignal | undefined, options.bodyTarget);
  }

  private async handleInto(request: HandlerRequest, signal: AbortSignal | undefined, target: BodyTarget): Promise<{ response: HandlerResponse }> {
    const port = request.port ?? 80;
    const hostHeader = request.port === undefined ? request.hostname : `${request.hostname}:${request.port}`;
    const query = request.query === undefined ? '' : buildQueryString(request.query);
    const lines = [`GET ${request.path}${query === '' ? '' : `?${query}`} HTTP/1.1`];
    let hasHost = false;
    for (const [name, value] of Object.entries(request.headers)) {
      if (/[\r\n]/.test(name) || /[\r\n]/.test(value)) throw new TypeError(`header ${JSON.stringify(name)} holds a line break`);
      if (name.toLowerCase() === 'host') hasHost = true;
      lines.push(`${name}: ${value}`);
    }
    if (!hasHost) lines.push(`host: ${hostHeader}`);
    const head = `${lines.join('\r\n')}\r\n\r\n`;
    const connection = this.connection(request.hostname, port);
    const answer = await connection.request(head, target.into, signal);
    this.intoRequests += answer.body === undefined ? 1 : 0;
    target.bytes = answer.body === undefined ? answer.intoBytes : undefined;
    const response: HandlerResponse = {
      statusCode: answer.statusCode,
      reason: answer.reason,
      headers: answer.headers,
      // The SDK wants a stream; a body already in the target array is an empty one.
      body: Readable.from(answer.body === undefined || answer.body.length === 0 ? [] : [answer.body]),
    };
    return { response };
  }

  /** An idle kept-alive connection to the host, or a new one. */
  private connection(hostname: string, port: number): Http1Connection {
    const key = `${hostname}:${port}`;
    const idle = this.idle.get(key);
    while (idle !== undefined && idle.length > 0) {
      const connection = idle.pop()!;
      if (connection.usable) return connection;
    }
    const connection = new Http1Connection(hostname, port, this.connectTimeoutMs);
    this.open.add(connection);
    connection.onIdle = (done) => {
      const list = this.idle.get(key) ?? [];
      if (this.destroyed || list.length >= IDLE_CONNECTIONS_MAX) {
        done.destroy();
        return;
      }
      list.push(done);
      this.idle.set(key, list);
    };
    connection.onClose = (done) => {
      this.open.delete(done);
      const list = this.idle.get(key);
      const at = list?.indexOf(done) ?? -1;
      if (at >= 0) list!.splice(at, 1);
    };
    return connection;
  }

  updateHttpClientConfig(key: keyof HandlerConfig, value: HandlerConfig[typeof key]): void {
    this.fallback.updateHttpClientConfig(key, value);
  }

  httpHandlerConfigs(): HandlerConfig {
    return this.fallback.httpHandlerConfigs();
  }

  destroy(): void {
    this.destroyed = true;
    for (const connection of this.open) connection.destroy();
    this.open.clear();
    this.idle.clear();
    this.fallback.destroy();
  }
}

/**
 * An HTTP proxy between an S3 client and a real S3 server that, on command, answers the next N
 * requests (optionally only those of one method or whose path matches a pattern) with a fault,
 * and otherwise forwards every request and response faithfully.
 *
 * SigV4: the client signs the Host header it sends, which names the proxy (its endpoint is the
 * proxy's URL). The proxy forwards that Host header unchanged, so the server checks the signature
 * against exactly what was signed; rewriting Host to the server's address would break every
 * signature. (Path-style requests, which the tests use, carry the bucket in the path, so the server
 * does not need Host to find it.)
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { S3RetryPolicy } from '../../src/store/s3/config.js';
import type { S3FailureKind } from '../../src/store/s3/failure.js';

export const S3_FAULTS = ['internal-error', 'unavailable', 'slow-down', 'reset', 'stall', 'truncate', 'signature'] as const;
/**
 * internal-error: 500 InternalError; unavailable: 503 ServiceUnavailable; slow-down: 429 SlowDown
 * (AWS itself sends SlowDown with 503); reset: the connection is reset (TCP RST) without an
 * answer; stall: no answer at all until the client gives up; truncate: the server's real answer
 * with its Content-Length but only half its body, then the connection closes; signature: 403
 * SignatureDoesNotMatch.
 */
export type S3Fault = (typeof S3_FAULTS)[number];

export interface FaultSelector {
  /** How many matching requests get the fault (default 1; Infinity: until clear()). */
  readonly count?: number;
  /** Only requests of this method (GET, PUT, HEAD, DELETE...). */
  readonly method?: string;
  /** Only requests whose path (with query) matches. */
  readonly pathPattern?: RegExp;
  /** Matching requests forwarded untouched before the fault starts (default 0): "fail the 3rd PUT". */
  readonly skip?: number;
}

interface FaultRule {
  readonly fault: S3Fault;
  remaining: number;
  skip: number;
  readonly method: string | undefined;
  readonly pathPattern: RegExp | undefined;
}

const CANNED: Partial<Record<S3Fault, { status: number; code: string; message: string }>> = {
  'internal-error': { status: 500, code: 'InternalError', message: 'We encountered an internal error. Please try again.' },
  unavailable: { status: 503, code: 'ServiceUnavailable', message: 'Service is unable to handle request.' },
  'slow-down': { status: 429, code: 'SlowDown', message: 'Please reduce your request rate.' },
  signature: { status: 403, code: 'SignatureDoesNotMatch', message: 'The request signature we calculated does not match the signature you provided.' },
};

export class S3FaultProxy {
  private readonly rules: FaultRule[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly agent = new http.Agent({ keepAlive: true });
  /** Faults answered, by kind. */
  readonly served: Record<S3Fault, number> = Object.fromEntries(S3_FAULTS.map((f) => [f, 0])) as Record<S3Fault, number>;
  /** Requests forwarded to the server. */
  forwarded = 0;
  private readonly servedWaiters: ((fault: S3Fault) => void)[] = [];

  private constructor(
    private readonly server: http.Server,
    private readonly target: URL,
  ) {}

  /** A proxy on a free loopback port in front of `targetEndpoint` (http://host:port). */
  static async start(targetEndpoint: string): Promise<S3FaultProxy> {
    const server = http.createServer();
    const proxy = new S3FaultProxy(server, new URL(targetEndpoint));
    server.on('request', (req, res) => proxy.handle(req, res));
    server.on('connection', (socket) => {
      proxy.sockets.add(socket);
      socket.once('close', () => proxy.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Answers the next matching requests with `fault`. Rules apply in the order they were added. */
  inject(fault: S3Fault, selector: FaultSelector = {}): void {
    this.rules.push({ fault, remaining: selector.count ?? 1, skip: selector.skip ?? 0, method: selector.method, pathPattern: selector.pathPattern });
  }

  /** Resolves when the proxy next answers a request with a fault (for a stall: has taken it in). */
  nextFault(): Promise<S3Fault> {
    return new Promise((resolve) => this.servedWaiters.push(resolve));
  }

  /** Drops every rule not used up yet: from now on everything is forwarded. */
  clear(): void {
    this.rules.length = 0;
  }

  async close(): Promise<void> {
    this.clear();
    for (const socket of this.sockets) socket.destroy();
    this.agent.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private takeFault(req: http.IncomingMessage): S3Fault | undefined {
    const rule = this.rules.find(
      (r) => r.remaining > 0 && (r.method === undefined || r.method === req.method) && (r.pathPattern === undefined || r.pathPattern.test(req.url ?? '')),
    );
    if (rule === undefined) return undefined;
    if (rule.skip > 0) {
      rule.skip--;
      return undefined;
    }
    rule.remaining--;
    this.served[rule.fault]++;
    for (const waiter of this.servedWaiters.splice(0)) waiter(rule.fault);
    return rule.fault;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const fault = this.takeFault(req);
    if (fault === undefined || fault === 'truncate') {
      this.forward(req, res, fault === 'truncate');
      return;
    }
    if (fault === 'stall') {
      req.resume(); // read the request, never answer: close() destroys the socket
      return;
    }
    if (fault === 'reset') {
      req.socket.resetAndDestroy();
      return;
    }
    const canned = CANNED[fault];
    if (canned === undefined) throw new Error(`fault ${fault} has no canned answer`);
    // Read the whole request first, so the client is not cut off mid-upload.
    req.resume();
    req.once('end', () => {
      const body =
        req.method === 'HEAD'
          ? ''
          : `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${canned.code}</Code><Message>${canned.message}</Message>` +
            `<Resource>${req.url ?? ''}</Resource><RequestId>s3-fault-proxy</RequestId></Error>`;
      res.writeHead(canned.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), 'x-amz-request-id': 's3-fault-proxy' });
      res.end(body);
    });
  }

  private forward(req: http.IncomingMessage, res: http.ServerResponse, truncate: boolean): void {
    this.forwarded++;
    const upstream = http.request(
      { host: this.target.hostname, port: this.target.port, method: req.method, path: req.url, headers: req.headers, agent: this.agent },
      (answer) => {
        if (!truncate) {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
          return;
        }
        const chunks: Buffer[] = [];
        answer.on('data', (chunk: Buffer) => chunks.push(chunk));
        answer.once('end', () => {
          const body = Buffer.concat(chunks);
          const headers = { ...answer.headers, 'content-length': String(body.length) };
          delete headers['transfer-encoding'];
          res.writeHead(answer.statusCode ?? 502, headers);
          // Half the body, then the connection goes away: the client sees fewer bytes than promised.
          res.write(body.subarray(0, Math.floor(body.length / 2)), () => res.socket?.destroy());
        });
      },
    );
    upstream.once('error', () => res.socket?.destroy());
    req.pipe(upstream);
  }
}

/** Short backoffs and timeouts for tests through the proxy: a retried call takes milliseconds, a persistent fault well under a second or two. */
export const FAST_RETRY: Partial<S3RetryPolicy> = { maxAttempts: 4, baseDelayMs: 2, maxDelayMs: 20, totalTimeMs: 5_000, attemptTimeoutMs: 400, connectTimeoutMs: 400 };

/** The failure kind the store's retry loop sorts each passing fault into. */
export const FAULT_KIND: Record<Exclude<S3Fault, 'signature'>, S3FailureKind> = {
  'internal-error': 'server',
  unavailable: 'server',
  'slow-down': 'throttle',
  reset: 'connection',
  stall: 'timeout',
  truncate: 'truncated',
};
export const TRANSIENT_FAULTS = Object.keys(FAULT_KIND) as (keyof typeof FAULT_KIND)[];

/**
 * The S3 endpoint's Prometheus metrics, per operation (the resolved endpoint, e.g. PutObject):
 * requests by status class, bytes received and sent, and latency. They render into the daemon's
 * one /metrics document (ApiMetrics.addSource), beside the REST API's.
 *
 * Bytes are counted on the connection: what the socket read and wrote between the end of the
 * previous request on it and the end of this one (request and response headers, aws-chunked
 * framing included), so a body streamed in or out is counted without touching the stream.
 */
import type { Socket } from 'node:net';
import { Counter, Histogram, LATENCY_BUCKETS_SECONDS } from '../rest/metrics.js';

/** The socket's byte counters when its previous request ended. */
interface SocketMark {
  readBytes: number;
  writtenBytes: number;
}

export class S3Metrics {
  readonly requests = new Counter('strata_s3_requests_total', 'S3 requests handled, by operation and status class (2xx, 3xx, 4xx, 5xx).');
  readonly receivedBytes = new Counter('strata_s3_received_bytes_total', 'Bytes the S3 endpoint read for requests (headers and framing included), by operation.');
  readonly sentBytes = new Counter('strata_s3_sent_bytes_total', 'Bytes the S3 endpoint wrote for responses (headers included), by operation.');
  readonly latency = new Histogram(
    'strata_s3_request_duration_seconds',
    'Time from receiving an S3 request to finishing its response, by operation.',
    LATENCY_BUCKETS_SECONDS,
  );
  private readonly marks = new WeakMap<Socket, SocketMark>();

  /** Records a finished request; `operation` is the endpoint it resolved to ('unresolved' when none). */
  record(operation: string, status: number, elapsedMs: number, socket: Socket | undefined): void {
    this.requests.inc({ operation, status_class: `${Math.floor(status / 100)}xx` });
    this.latency.observe({ operation }, elapsedMs / 1000);
    if (socket === undefined) return;
    const mark = this.marks.get(socket) ?? { readBytes: 0, writtenBytes: 0 };
    const readBytes = socket.bytesRead;
    const writtenBytes = socket.bytesWritten;
    this.receivedBytes.inc({ operation }, Math.max(0, readBytes - mark.readBytes));
    this.sentBytes.inc({ operation }, Math.max(0, writtenBytes - mark.writtenBytes));
    this.marks.set(socket, { readBytes, writtenBytes });
  }

  render(): string {
    return [this.requests.render(), this.receivedBytes.render(), this.sentBytes.render(), this.latency.render()].join('\n');
  }
}

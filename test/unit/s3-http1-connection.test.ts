/**
 * Http1Connection (src/store/s3/http1-connection.ts) against a real TCP server that answers each
 * request with exact bytes: the response shapes S3 servers send and the broken ones a network
 * makes. Real S3 servers (moto, radosgw) only send the well-formed common case, so the odd shapes
 * (a head split across reads, chunked bodies, a body delimited by the connection's end, a 200 to a
 * ranged GET, a body longer than its Content-Length) are written here byte for byte.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Http1Connection } from '../../src/store/s3/http1-connection.js';
import { TruncatedBodyError } from '../../src/store/s3/failure.js';

/** A server whose every request is answered by `answer` (pieces written one by one, each flushed). */
async function rawServer(answer: (socket: Socket, requestNumber: number) => void): Promise<{ server: Server; port: number; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((socket) => {
    let pending = '';
    socket.on('data', (data) => {
      pending += data.toString('latin1');
      while (pending.includes('\r\n\r\n')) {
        const end = pending.indexOf('\r\n\r\n') + 4;
        requests.push(pending.slice(0, end));
        pending = pending.slice(end);
        answer(socket, requests.length);
      }
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, requests };
}

const servers: Server[] = [];
const connections: Http1Connection[] = [];
afterEach(async () => {
  for (const connection of connections.splice(0)) connection.destroy();
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
});

async function connectTo(answer: (socket: Socket, requestNumber: number) => void): Promise<{ connection: Http1Connection; requests: string[] }> {
  const { server, port, requests } = await rawServer(answer);
  servers.push(server);
  const connection = new Http1Connection('127.0.0.1', port, 2000);
  connections.push(connection);
  return { connection, requests };
}

const body = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 31) & 0xff));
const GET = 'GET /bucket/key HTTP/1.1\r\nhost: test\r\n\r\n';

describe('Http1Connection', () => {
  it('a 206 body goes into the array, with its head split across reads; the connection then serves again', async () => {
    const { connection, requests } = await connectTo((socket) => {
      const head = `HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-199999/300000\r\nContent-Length: ${body.length}\r\n\r\n`;
      socket.write(head.slice(0, 10));
      setImmediate(() => socket.write(Buffer.concat([Buffer.from(head.slice(10), 'latin1'), body.subarray(0, 1000)])));
      setImmediate(() => setImmediate(() => socket.write(body.subarray(1000))));
    });
    let idle = 0;
    connection.onIdle = () => idle++;
    for (let round = 0; round < 2; round++) {
      const into = new Uint8Array(250_000);
      const answer = await connection.request(GET, into, undefined);
      expect(answer.statusCode).toBe(206);
      expect(answer.headers['content-range']).toBe('bytes 0-199999/300000');
      expect(answer.body).toBeUndefined();
      expect(answer.intoBytes).toBe(body.length);
      expect(Buffer.from(into.subarray(0, body.length)).equals(body)).toBe(true);
    }
    expect(requests).toHaveLength(2);
    expect(idle).toBe(2);
  });

  it('an error body, chunked, is collected whole and never written into the array', async () => {
    const xml = '<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>';
    const { connection } = await connectTo((socket) => {
      socket.write('HTTP/1.1 503 Slow Down\r\nTransfer-Encoding: chunked\r\nContent-Type: application/xml\r\n\r\n');
      socket.write(`${(20).toString(16)}\r\n${xml.slice(0, 20)}\r\n`);
      setImmediate(() => socket.write(`${(xml.length - 20).toString(16)};ext=1\r\n${xml.slice(20)}\r\n0\r\nx-trailer: 1\r\n\r\n`));
    });
    const into = new Uint8Array(1000).fill(9);
    const answer = await connection.request(GET, into, undefined);
    expect(answer.statusCode).toBe(503);
    expect(answer.body?.toString()).toBe(xml);
    expect(into.every((b) => b === 9)).toBe(true);
    expect(connection.usable).toBe(true);
  });

  it('a 200 larger than the array (a server that ignored Range) is collected; a body ended by the close is read to the end', async () => {
    const { connection } = await connectTo((socket, n) => {
      if (n === 1) socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`), body]));
      else socket.end(Buffer.concat([Buffer.from('HTTP/1.0 200 OK\r\n\r\n'), body]));
    });
    const whole = await connection.request(GET, new Uint8Array(10), undefined);
    expect(whole.body!.equals(body)).toBe(true);
    const untilClose = await connection.request(GET, new Uint8Array(10), undefined);
    expect(untilClose.body!.equals(body)).toBe(true);
    expect(connection.usable).toBe(false);
  });

  it('a body cut short is TruncatedBodyError, a close before any answer ECONNRESET, a body longer than its length an error', async () => {
    const shortened = await connectTo((socket) => socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 206 Partial Content\r\nContent-Length: ${body.length}\r\n\r\n`), body.subarray(0, 70_000)])));
    await expect(shortened.connection.request(GET, new Uint8Array(body.length), undefined)).rejects.toBeInstanceOf(TruncatedBodyError);
    const hungUp = await connectTo((socket) => socket.destroy());
    await expect(hungUp.connection.request(GET, new Uint8Array(10), undefined)).rejects.toMatchObject({ code: 'ECONNRESET' });
    const tooLong = await connectTo((socket) => socket.write('HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nabc'));
    await expect(tooLong.connection.request(GET, undefined, undefined)).rejects.toMatchObject({ code: 'HPE_INVALID_CONTENT_LENGTH' });
    expect(tooLong.connection.usable).toBe(false);
  });

  it('an abort ends the exchange at once and closes the connection', async () => {
    const { connection } = await connectTo(() => undefined); // never answers
    const controller = new AbortController();
    const pending = connection.request(GET, new Uint8Array(10), controller.signal);
    controller.abort(new Error('attempt timed out'));
    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(connection.usable).toBe(false);
  });
});

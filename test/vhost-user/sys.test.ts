/** src/sys: unix sockets with descriptor passing, shared mappings, eventfds; no descriptor leaks. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EventFd } from '../../src/sys/eventfd.js';
import { closeFd } from '../../src/sys/fd.js';
import { libc, SysError } from '../../src/sys/libc.js';
import { memfdCreate } from '../../src/sys/memfd.js';
import { mapShared } from '../../src/sys/mmap.js';
import { UnixListener, UnixStream } from '../../src/sys/unix-socket.js';
import { tempDir } from '../support/tmp.js';

function openFdCount(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

/** Resolves once cb returns something other than undefined, polling on the event loop. */
async function until<T>(cb: () => T | undefined, timeoutMs = 2000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = cb();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function connectedPair(dir: string): Promise<{ listener: UnixListener; client: UnixStream; server: UnixStream }> {
  const listener = UnixListener.listen(path.join(dir, 's.sock'));
  let server: UnixStream | undefined;
  listener.onConnection((s) => (server = s));
  const client = UnixStream.connect(listener.path);
  return { listener, client, server: await until(() => server) };
}

function readAll(s: UnixStream, bytes: number, maxFds: number): Promise<{ data: Uint8Array; fds: number[] }> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    const fds: number[] = [];
    let have = 0;
    s.onReadable(() => {
      try {
        while (have < bytes) {
          const r = s.recvMessage(bytes - have, maxFds);
          if (r === 'again') return;
          if (r === 'eof') throw new Error('eof');
          chunks.push(r.data);
          fds.push(...r.fds);
          have += r.data.length;
        }
        s.stopWatching();
        resolve({ data: Buffer.concat(chunks), fds });
      } catch (err) {
        s.stopWatching();
        reject(err);
      }
    });
  });
}

describe('src/sys', () => {
  it('passes descriptors between two UnixStreams in one process', async () => {
    const before = openFdCount();
    const dir = tempDir();
    const { listener, client, server } = await connectedPair(dir);
    const memfd = memfdCreate('t', 8192);
    const ev = EventFd.create();
    client.sendMessage(new Uint8Array([1, 2, 3, 4, 5, 6]), [memfd, ev.fd]);
    const got = await readAll(server, 6, 8);
    expect([...got.data]).toEqual([1, 2, 3, 4, 5, 6]);
    expect(got.fds).toHaveLength(2);
    expect(got.fds).not.toContain(memfd);

    // The received descriptors are the same objects: memory and doorbell are shared.
    const [rMem, rEv] = got.fds as [number, number];
    const a = mapShared(memfd, 8192, 0);
    const b = mapShared(rMem, 8192, 0);
    a.bytes[100] = 0x5a;
    expect(b.bytes[100]).toBe(0x5a);
    const remote = EventFd.fromFd(rEv);
    remote.signal();
    expect(ev.drain()).toBe(1);

    a.unmap();
    b.unmap();
    remote.close();
    ev.close();
    closeFd(memfd);
    closeFd(rMem);

    // EOF after the peer closes.
    client.close();
    const eof = await until(() => {
      const r = server.recvMessage(16, 1);
      return r === 'eof' ? r : undefined;
    });
    expect(eof).toBe('eof');
    server.close();
    listener.close();
    expect(fs.existsSync(listener.path)).toBe(false);
    expect(openFdCount()).toBe(before);
  });

  it('frames a stream: short reads, descriptors arrive with the first byte', async () => {
    const dir = tempDir();
    const { listener, client, server } = await connectedPair(dir);
    const ev = EventFd.create();
    client.sendMessage(new Uint8Array(100).fill(7), [ev.fd]);
    client.sendMessage(new Uint8Array(50).fill(9));
    const first = await readAll(server, 12, 1);
    expect(first.fds).toHaveLength(1);
    const rest = await readAll(server, 138, 1);
    expect(rest.fds).toHaveLength(0);
    expect(rest.data[87]).toBe(7);
    expect(rest.data[88]).toBe(9);
    closeFd(first.fds[0]!);
    ev.close();
    client.close();
    server.close();
    listener.close();
  });

  it('closes every descriptor and throws when more arrive than allowed', async () => {
    const dir = tempDir();
    const { listener, client, server } = await connectedPair(dir);
    const evs = [EventFd.create(), EventFd.create(), EventFd.create()];
    const before = openFdCount();
    client.sendMessage(new Uint8Array(12), evs.map((e) => e.fd));
    await expect(readAll(server, 12, 1)).rejects.toBeInstanceOf(SysError);
    expect(openFdCount()).toBe(before);
    for (const e of evs) e.close();
    client.close();
    server.close();
    listener.close();
  });

  it('removes a stale socket file but never another kind of file', () => {
    const dir = tempDir();
    const p = path.join(dir, 'x.sock');
    const l1 = UnixListener.listen(p);
    // Simulate a killed daemon: the file stays, the socket is gone.
    closeFd(l1.fd);
    expect(fs.existsSync(p)).toBe(true);
    const l2 = UnixListener.listen(p);
    l2.close();
    fs.writeFileSync(p, 'not a socket');
    expect(() => UnixListener.listen(p)).toThrow(/not a socket/);
    expect(fs.readFileSync(p, 'utf8')).toBe('not a socket');
  });

  it('maps a memfd twice, also at an offset that is not page-aligned', () => {
    const fd = memfdCreate('m', 3 * 4096);
    const whole = mapShared(fd, 3 * 4096, 0);
    const part = mapShared(fd, 100, 4096 + 10);
    expect(part.hostAddr % 4096n).toBe(10n);
    part.bytes[0] = 0xab;
    expect(whole.bytes[4096 + 10]).toBe(0xab);
    whole.bytes[4096 + 109] = 0xcd;
    expect(part.bytes[99]).toBe(0xcd);
    expect(() => mapShared(fd, 0, 0)).toThrow(SysError);
    const ro = mapShared(fd, 4096, 0, { readOnly: true });
    expect(ro.bytes.length).toBe(4096);
    ro.unmap();
    whole.unmap();
    whole.unmap(); // idempotent
    part.unmap();
    closeFd(fd);
    expect(() => closeFd(fd)).toThrow(/EBADF/);
  });

  it('eventfd: signal, drain, onReadable', async () => {
    const ev = EventFd.create();
    expect(ev.drain()).toBe(0);
    ev.signal();
    ev.signal();
    ev.signal();
    expect(ev.drain()).toBe(3);
    expect(ev.drain()).toBe(0);

    let wakeups = 0;
    let total = 0;
    ev.onReadable(() => {
      wakeups++;
      total += ev.drain();
    });
    ev.signal();
    await until(() => (total === 1 ? true : undefined));
    ev.signal();
    ev.signal();
    await until(() => (total === 3 ? true : undefined));
    ev.stopWatching();
    const seen = wakeups;
    ev.signal();
    await new Promise((r) => setTimeout(r, 20));
    expect(wakeups).toBe(seen);
    expect(ev.drain()).toBe(1);
    ev.close();
    ev.close();
    expect(() => ev.signal()).toThrow(SysError);
  });
  it('doubts an errno overwritten after a failed recvmsg or eventfd read, believes one seen twice', async () => {
    // koffi reads errno live; here another failing call (close(-1): EBADF) overwrites it between
    // the call's return and that read, as the runtime's own work can, so that the loops' second
    // look is what keeps the stream.
    const dir = tempDir();
    const { listener, client, server } = await connectedPair(dir);
    const events = EventFd.create();
    const bindings = libc();
    const { recvmsg, read, close } = bindings;
    let overwrites = 0;
    const overwriting = <A extends unknown[]>(call: (...args: A) => number) => (...args: A): number => {
      const n = call(...args);
      if (n < 0 && overwrites > 0) {
        overwrites--;
        close(-1);
      }
      return n;
    };
    bindings.recvmsg = overwriting(recvmsg);
    bindings.read = overwriting(read);
    try {
      overwrites = 1;
      expect(server.recvMessage(64, 0)).toBe('again');
      expect(events.drain()).toBe(0);
      expect(overwrites).toBe(0);
      overwrites = 2;
      expect(() => server.recvMessage(64, 0)).toThrow(/recvmsg.*EBADF/);
      expect(server.recvMessage(64, 0)).toBe('again');
      overwrites = 2;
      expect(() => events.drain()).toThrow(/EBADF/);
      overwrites = 1;
      client.sendMessage(Buffer.from('still served'));
      const got = await readAll(server, 12, 0);
      expect(Buffer.from(got.data).toString()).toBe('still served');
    } finally {
      bindings.recvmsg = recvmsg;
      bindings.read = read;
      events.close();
      client.close();
      server.close();
      listener.close();
    }
  });
});

/**
 * Online grow over vhost-user, at the protocol level (the TypeScript front-end, no guest): a volume
 * exported by VhostUserBlkExport from a real LocalVolumeService grows while a front-end is attached.
 * The front-end hands over a back-end request channel (SET_BACKEND_REQ_FD); the grow must arrive
 * on it as a well-formed CONFIG_CHANGE_MSG, GET_CONFIG must answer the new capacity, and the new
 * space must take I/O. A front-end that gives no channel, a broken one (closed, not a socket, never
 * read, answering garbage) must never cost the resize, the connection or its I/O.
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, onTestFinished } from 'vitest';
import { VhostUserBlkExport } from '../../src/export/vhost-user/export.js';
import { EventFd } from '../../src/sys/eventfd.js';
import { UnixListener, UnixStream } from '../../src/sys/unix-socket.js';
import { expectCode, makeEnv, MiB } from '../volume/helpers.js';
import { tempDir } from '../support/tmp.js';
import { bit, FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, HEADER_BYTES, ProtocolFeature, VhostUserFrontend, VhostUserRequest, DEFAULT_PROTOCOL_MASK } from './frontend.js';

const SECTOR_BYTES = 512;
/** VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, written here from the spec (not imported from src). */
const BACKEND_CONFIG_CHANGE_MSG = 2;
const WITH_BACKEND_REQ = DEFAULT_PROTOCOL_MASK | bit(ProtocolFeature.BACKEND_REQ);

interface Attached {
  fe: VhostUserFrontend;
  logs: string[];
  grow: (sizeBytes: number) => Promise<void>;
  readVolume: (offsetBytes: number, lengthBytes: number) => Promise<Uint8Array>;
  service: Awaited<ReturnType<typeof makeEnv>>['service'];
}

/** A 4 MiB volume exported over vhost-user, a front-end connected to it (rings started). */
async function attach(frontendOptions: Parameters<typeof VhostUserFrontend.connect>[1] = {}): Promise<Attached & { socketPath: string; reconnect: (o?: Parameters<typeof VhostUserFrontend.connect>[1]) => Promise<VhostUserFrontend> }> {
  const env = await makeEnv();
  const service = env.service;
  await service.createPool('p');
  await service.createVolume('p', 'vm', 4 * MiB);
  const device = await service.openDevice('p', 'vm');
  const logs: string[] = [];
  const socketPath = path.join(tempDir(), 'vm.sock');
  const exp = new VhostUserBlkExport({ socketPath, queueCount: 1, readOnly: false, serial: 'vm', logger: (line) => logs.push(line) });
  await exp.start(device);
  const fe = await VhostUserFrontend.connect(socketPath, frontendOptions);
  onTestFinished(async () => {
    fe.close();
    exp.requestShutdown();
    await exp.closed;
    await device.close();
  });
  return {
    fe,
    logs,
    service,
    socketPath,
    grow: async (sizeBytes) => {
      await service.resizeVolume('p', 'vm', sizeBytes);
    },
    readVolume: async (offsetBytes, lengthBytes) => {
      const buf = new Uint8Array(lengthBytes);
      await device.read(offsetBytes, buf);
      return buf;
    },
    reconnect: async (o = frontendOptions) => {
      fe.close();
      for (let i = 0; i < 200 && exp.stats().connected; i++) await sleep(5);
      return VhostUserFrontend.connect(socketPath, o);
    },
  };
}

/** A connected socket pair: the back-end's end is handed over, the test keeps the front-end's. */
async function channelPair(): Promise<{ mine: UnixStream; theirsFd: number }> {
  const listener = UnixListener.listen(path.join(tempDir(), 'channel.sock'));
  try {
    const accepted = new Promise<UnixStream>((resolve) => listener.onConnection(resolve));
    const theirs = UnixStream.connect(listener.path);
    const mine = await accepted;
    onTestFinished(() => {
      mine.close();
      theirs.close();
    });
    return { mine, theirsFd: theirs.fd };
  } finally {
    listener.close();
  }
}

/** Everything the back-end sent on the channel so far (waits up to waitMs for the first bytes). */
async function readChannel(s: UnixStream, waitMs = 2000): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const end = Date.now() + waitMs;
  for (;;) {
    const r = s.recvMessage(4096, 4);
    if (r !== 'again' && r !== 'eof') {
      chunks.push(r.data);
      continue;
    }
    if (chunks.length > 0 || r === 'eof' || Date.now() > end) break;
    await sleep(10);
  }
  return Buffer.concat(chunks);
}

function header(bytes: Uint8Array, at = 0): { request: number; flags: number; size: number } {
  const dv = new DataView(bytes.buffer, bytes.byteOffset + at, HEADER_BYTES);
  return { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
}

function reply(request: number, status: bigint): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + 8);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, request, true);
  dv.setUint32(4, FLAG_VERSION | FLAG_REPLY, true);
  dv.setUint32(8, 8, true);
  dv.setBigUint64(HEADER_BYTES, status, true);
  return out;
}

/** Writes a recognisable last sector at the end of the grown volume and checks the volume holds it. */
async function lastSectorRoundTrip(a: Attached, sizeBytes: number): Promise<void> {
  const data = new Uint8Array(SECTOR_BYTES).map((_, i) => (i * 7 + 3) & 0xff);
  const lastSector = sizeBytes / SECTOR_BYTES - 1;
  await a.fe.write(lastSector, data);
  await a.fe.flush();
  expect(await a.fe.read(lastSector, SECTOR_BYTES)).toEqual(data);
  expect(await a.readVolume(sizeBytes - SECTOR_BYTES, SECTOR_BYTES)).toEqual(data);
}

describe('vhost-user online grow', () => {
  it('offers BACKEND_REQ, sends a well-formed CONFIG_CHANGE_MSG on a grow, then GET_CONFIG answers the new capacity', async () => {
    const a = await attach({ protocolFeatureMask: WITH_BACKEND_REQ });
    expect(a.fe.backendProtocolFeatures & bit(ProtocolFeature.BACKEND_REQ)).not.toBe(0n);
    const { mine, theirsFd } = await channelPair();
    await a.fe.request(VhostUserRequest.SET_BACKEND_REQ_FD, new Uint8Array(0), [theirsFd], true);
    expect((await a.fe.getConfig()).capacitySectors).toBe(BigInt((4 * MiB) / SECTOR_BYTES));

    await a.grow(8 * MiB);
    const sent = await readChannel(mine);
    // One message: header only, version 1, NEED_REPLY because REPLY_ACK was negotiated, no REPLY.
    expect(sent.length).toBe(HEADER_BYTES);
    expect(header(sent)).toEqual({ request: BACKEND_CONFIG_CHANGE_MSG, flags: FLAG_VERSION | FLAG_NEED_REPLY, size: 0 });
    expect((await a.fe.getConfig()).capacitySectors).toBe(BigInt((8 * MiB) / SECTOR_BYTES));
    mine.sendMessage(reply(BACKEND_CONFIG_CHANGE_MSG, 0n));
    await lastSectorRoundTrip(a, 8 * MiB);

    // A failure the front-end reports is logged, and the channel stays for the next grow.
    await a.grow(12 * MiB);
    expect(header(await readChannel(mine)).request).toBe(BACKEND_CONFIG_CHANGE_MSG);
    mine.sendMessage(reply(BACKEND_CONFIG_CHANGE_MSG, 1n));
    for (let i = 0; i < 200 && !a.logs.some((l) => l.includes('could not apply a config change (status 1)')); i++) await sleep(10);
    expect(a.logs.some((l) => l.includes('could not apply a config change (status 1)'))).toBe(true);
    await a.grow(16 * MiB);
    expect(header(await readChannel(mine)).request).toBe(BACKEND_CONFIG_CHANGE_MSG);
    expect((await a.fe.getConfig()).capacitySectors).toBe(BigInt((16 * MiB) / SECTOR_BYTES));
  });

  it('sets no NEED_REPLY when REPLY_ACK was not negotiated', async () => {
    const a = await attach({ protocolFeatureMask: WITH_BACKEND_REQ & ~bit(ProtocolFeature.REPLY_ACK) });
    const { mine, theirsFd } = await channelPair();
    await a.fe.request(VhostUserRequest.SET_BACKEND_REQ_FD, new Uint8Array(0), [theirsFd]);
    await a.grow(8 * MiB);
    expect(header(await readChannel(mine))).toEqual({ request: BACKEND_CONFIG_CHANGE_MSG, flags: FLAG_VERSION, size: 0 });
    expect((await a.fe.getConfig()).capacitySectors).toBe(BigInt((8 * MiB) / SECTOR_BYTES));
  });

  it('keeps writes issued while the volume grows, and refuses a shrink while attached', async () => {
    const a = await attach({ protocolFeatureMask: WITH_BACKEND_REQ, queueDepth: 32 });
    const { theirsFd } = await channelPair();
    await a.fe.request(VhostUserRequest.SET_BACKEND_REQ_FD, new Uint8Array(0), [theirsFd], true);
    const sectors = (4 * MiB) / SECTOR_BYTES;
    const blockOf = (n: number): Uint8Array => new Uint8Array(4096).fill((n % 251) + 1);
    // 32 writes of 4 KiB spread over the old size, in flight around the grow.
    const writes = Array.from({ length: 32 }, (_, n) => a.fe.write(n * (sectors / 32), blockOf(n)));
    const grown = a.grow(8 * MiB);
    await Promise.all([...writes, grown]);
    for (let n = 0; n < 32; n++) expect(await a.readVolume(n * (4 * MiB) / 32, 4096)).toEqual(blockOf(n));
    await expectCode(a.service.resizeVolume('p', 'vm', 2 * MiB, { allowShrink: true }), 'BUSY', /shrink/);
    expect((await a.fe.getConfig()).capacitySectors).toBe(BigInt((8 * MiB) / SECTOR_BYTES));
  });

  it('grows for a front-end without a channel; a reconnect reads the new capacity', async () => {
    const a = await attach();
    await a.grow(8 * MiB);
    expect((await a.fe.getConfig()).capacitySectors).toBe(BigInt((8 * MiB) / SECTOR_BYTES));
    expect(a.logs.some((l) => l.includes('gave no back-end request channel'))).toBe(true);
    await lastSectorRoundTrip(a, 8 * MiB);
    const again = await a.reconnect();
    onTestFinished(() => again.close());
    expect(again.config!.capacitySectors).toBe(BigInt((8 * MiB) / SECTOR_BYTES));
  });

  it('tells a front-end that reconnects without reading the config to read it again (QEMU keeps the one it read before)', async () => {
    const a = await attach();
    await a.grow(8 * MiB);
    // QEMU's reconnect: the channel, then the rings, and no GET_CONFIG. Leaving CONFIG out of this
    // front-end's mask is how it skips the GET_CONFIG of its init sequence.
    const mask = WITH_BACKEND_REQ & ~bit(ProtocolFeature.CONFIG);
    a.fe.close();
    const fe = await a.reconnect({ protocolFeatureMask: mask, start: false });
    onTestFinished(() => fe.close());
    const { mine, theirsFd } = await channelPair();
    await fe.request(VhostUserRequest.SET_BACKEND_REQ_FD, new Uint8Array(0), [theirsFd], true);
    await fe.start();
    expect(header(await readChannel(mine)).request).toBe(BACKEND_CONFIG_CHANGE_MSG);
  });

  describe('a hostile or broken channel costs neither the resize nor the I/O', () => {
    async function expectChannelDropped(a: Attached, why: RegExp): Promise<void> {
      await a.grow(8 * MiB);
      expect((await a.fe.getConfig()).capacitySectors).toBe(BigInt((8 * MiB) / SECTOR_BYTES));
      await lastSectorRoundTrip(a, 8 * MiB);
      for (let i = 0; i < 200 && !a.logs.some((l) => why.test(l)); i++) await sleep(10);
      expect(a.logs.filter((l) => l.includes('back-end request channel closed'))).toHaveLength(1);
      expect(a.logs.some((l) => why.test(l))).toBe(true);
      // Later grows neither log again nor fail.
      await a.grow(12 * MiB);
      await lastSectorRoundTrip(a, 12 * MiB);
      expect(a.logs.filter((l) => l.includes('back-end request channel closed'))).toHaveLength(1);
      expect(a.fe.connected).toBe(true);
    }

    it('the front-end closed its end', async () => {
      const a = await attach({ protocolFeatureMask: WITH_BACKEND_REQ });
      const { mine, theirsFd } = await channelPair();
      await a.fe.request(VhostUserRequest.SET_BACKEND_REQ_FD, new Uint8Array(0), [theirsFd], true);
      mine.close();
      await expectChannelDropped(a, /channel closed: cannot send CONFIG_CHANGE_MSG: .*EPIPE|channel closed: cannot send CONFIG_CHANGE_MSG: .*ECONNRESET/);
    });

    it('the descriptor is not a socket', async () => {
      const a = await attach({ protocolFeatureMask: WITH_BACKEND_REQ });
      const notASocket = EventFd.create({ nonBlocking: true });
      onTestFinished(() => notASocket.close());
      await a.fe.request(VhostUserRequest.SET_BACKEND_REQ_FD, new Uint8Array(0), [notASocket.fd], true);
      await expectChannelDropped(a, /channel closed: cannot send CONFIG_CHANGE_MSG: .*ENOTSOCK/);
    });

    it('the front-end answers with something it was not asked', async () => {
      const a = await attach({ protocolFeatureMask: WITH_BACKEND_REQ });
      const { mine, theirsFd } = await channelPair();
      await a.fe.request(VhostUserRequest.SET_BACKEND_REQ_FD, new Uint8Array(0), [theirsFd], true);
      mine.sendMessage(reply(99, 0n));
      await expectChannelDropped(a, /channel closed: unexpected message from the front-end \(request 99/);
    });

    it('the front-end never reads it nor answers', async () => {
      const a = await attach({ protocolFeatureMask: WITH_BACKEND_REQ });
      const { theirsFd } = await channelPair();
      await a.fe.request(VhostUserRequest.SET_BACKEND_REQ_FD, new Uint8Array(0), [theirsFd], true);
      for (let n = 1; n <= 40; n++) await a.grow((4 + n) * MiB);
      expect((await a.fe.getConfig()).capacitySectors).toBe(BigInt((44 * MiB) / SECTOR_BYTES));
      await lastSectorRoundTrip(a, 44 * MiB);
      expect(a.fe.connected).toBe(true);
    });
  });
});

/**
 * NBD over TLS (NBD_OPT_STARTTLS) on the TCP listener, with real clients: qemu-io with QEMU's
 * tls-creds-x509, libnbd's nbdinfo and nbdcopy with nbds:// URIs. Certificates are made with
 * openssl for the test (a CA, and a server certificate for 127.0.0.1 signed by it).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createSecureContext } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../support/tmp.js';
import { makeCertificates, qemuTlsArgs } from '../support/tls-certs.js';
import { expectSuccess, requireTool, runAsync } from '../support/tools.js';
import { createImage, serveImage } from './helpers.js';
import * as P from '../../src/export/nbd/protocol.js';
import { RawClient } from './raw-client.js';

const MiB = 1024 * 1024;

/** An image served on a unix socket and on TCP with TLS (required or offered), with its certificates. */
async function serveWithTls(required: boolean) {
  const dir = tempDir();
  const certs = makeCertificates(dir, 'good');
  const imagePath = createImage(dir, 16 * MiB);
  const secureContext = createSecureContext({ cert: readFileSync(certs.cert), key: readFileSync(certs.key) });
  const s = await serveImage(dir, imagePath, { tcp: true, tcpTls: { secureContext, required } });
  return { dir, certs, s };
}

describe.skipIf(!requireTool('openssl', 'qemu-io', 'nbdinfo', 'nbdcopy'))('NBD over TLS', () => {
  it('required TLS: TLS clients read and write, plaintext clients are refused, the unix socket stays plaintext', async () => {
    const { dir, certs, s } = await serveWithTls(true);
    try {
      const port = s.server.tcpPort!;
      // qemu-io over TLS: a write, read back with pattern check.
      const io = await runAsync('qemu-io', [...qemuTlsArgs(certs.caDir, port), '-c', 'write -P 0x5a 1M 1M', '-c', 'read -P 0x5a 1M 1M']);
      expectSuccess(io, 'qemu-io over TLS');
      expect(io.stdout).not.toMatch(/Pattern verification failed/);
      // libnbd over TLS: nbdinfo sees the export, nbdcopy copies it byte for byte.
      const uri = `nbds://127.0.0.1:${port}/vol?tls-certificates=${certs.caDir}`;
      const info = await runAsync('nbdinfo', ['--json', uri]);
      expectSuccess(info, 'nbdinfo over TLS');
      expect((JSON.parse(info.stdout) as { exports: { 'export-size': number }[] }).exports[0]?.['export-size']).toBe(16 * MiB);
      const copy = path.join(dir, 'copy.raw');
      expectSuccess(await runAsync('nbdcopy', [uri, copy]), 'nbdcopy over TLS');
      const bytes = readFileSync(copy);
      expect(bytes.subarray(MiB, 2 * MiB).every((b) => b === 0x5a)).toBe(true);
      expect(bytes.subarray(0, MiB).every((b) => b === 0)).toBe(true);

      // Plaintext over TCP is refused with the protocol's TLS-required error; nothing was served.
      const plain = await runAsync('nbdinfo', [`nbd://127.0.0.1:${port}/vol`]);
      expect(plain.code).not.toBe(0);
      // (libnbd reports NBD_REP_ERR_TLS_REQD as "Operation not supported"; qemu names it.)
      const plainQemu = await runAsync('qemu-io', ['-f', 'raw', '-c', 'read 0 4k', `nbd://127.0.0.1:${port}/vol`]);
      expect(plainQemu.code).not.toBe(0);
      expect(plainQemu.stderr).toMatch(/TLS negotiation required/);
      expect(plainQemu.stderr).toMatch(/this server requires TLS/);

      // The unix socket is local: plaintext there.
      const local = await runAsync('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 1M 64k', s.uri()]);
      expectSuccess(local, 'qemu-io over the unix socket');
    } finally {
      await s.close();
    }
  }, 120_000);

  it('a client that trusts another CA fails the handshake; the server keeps serving the others', async () => {
    const dir = tempDir();
    const certs = makeCertificates(dir, 'good');
    const other = makeCertificates(dir, 'other');
    const imagePath = createImage(dir, 16 * MiB);
    const secureContext = createSecureContext({ cert: readFileSync(certs.cert), key: readFileSync(certs.key) });
    const s = await serveImage(dir, imagePath, { tcp: true, tcpTls: { secureContext, required: true } });
    try {
      const port = s.server.tcpPort!;
      const bad = await runAsync('nbdinfo', [`nbds://127.0.0.1:${port}/vol?tls-certificates=${other.caDir}`]);
      expect(bad.code).not.toBe(0);
      const badQemu = await runAsync('qemu-io', [...qemuTlsArgs(other.caDir, port), '-c', 'read 0 4k']);
      expect(badQemu.code).not.toBe(0);
      for (let i = 0; i < 100 && s.server.connectionCount > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(s.server.connectionCount).toBe(0);
      const good = await runAsync('qemu-io', [...qemuTlsArgs(certs.caDir, port), '-c', 'write -P 7 0 4k', '-c', 'read -P 7 0 4k']);
      expectSuccess(good, 'qemu-io over TLS after a failed handshake');
    } finally {
      await s.close();
    }
  }, 120_000);

  it('a raw client: options before STARTTLS get TLS_REQD, STARTTLS with data is invalid, garbage instead of a handshake closes only that connection', async () => {
    const { certs, s } = await serveWithTls(true);
    try {
      const port = s.server.tcpPort!;
      const c = await RawClient.connectTcp(port);
      await c.greeting();
      c.sendClientFlags();
      c.sendOption(P.NBD_OPT_GO, RawClient.goData('vol'));
      expect((await c.optionReply()).type).toBe(P.NBD_REP_ERR_TLS_REQD);
      c.sendOption(P.NBD_OPT_LIST);
      expect((await c.optionReply()).type).toBe(P.NBD_REP_ERR_TLS_REQD);
      c.sendOption(P.NBD_OPT_STARTTLS, Buffer.from('x'));
      expect((await c.optionReply()).type).toBe(P.NBD_REP_ERR_INVALID);
      c.sendOption(P.NBD_OPT_STARTTLS);
      expect((await c.optionReply()).type).toBe(P.NBD_REP_ACK);
      c.write(Buffer.alloc(512, 0x41)); // not a TLS ClientHello
      expect(await c.waitClosed()).toBe(true);
      // EXPORT_NAME cannot carry an error: the connection is closed instead.
      const e = await RawClient.connectTcp(port);
      await e.greeting();
      e.sendClientFlags();
      e.sendOption(P.NBD_OPT_EXPORT_NAME, Buffer.from('vol'));
      expect(await e.waitClosed()).toBe(true);
      // Others are still served.
      const good = await runAsync('qemu-io', [...qemuTlsArgs(certs.caDir, port), '-c', 'read 0 4k']);
      expectSuccess(good, 'qemu-io over TLS after the raw clients');
    } finally {
      await s.close();
    }
  }, 120_000);

  it('offered TLS: clients may use it or not', async () => {
    const { certs, s } = await serveWithTls(false);
    try {
      const port = s.server.tcpPort!;
      expectSuccess(await runAsync('qemu-io', [...qemuTlsArgs(certs.caDir, port), '-c', 'write -P 3 0 64k']), 'qemu-io over TLS');
      expectSuccess(await runAsync('qemu-io', ['-f', 'raw', '-c', 'read -P 3 0 64k', `nbd://127.0.0.1:${port}/vol`]), 'qemu-io in plaintext');
    } finally {
      await s.close();
    }
  }, 120_000);
});

/**
 * NBD over TLS through the daemon: `strata serve --nbd-tls-cert --nbd-tls-key` requires TLS on the
 * TCP listener, export-nbd prints nbds:// URIs, QEMU and libnbd clients work over TLS, plaintext
 * clients are refused, the unix socket stays plaintext; bad TLS settings stop the start-up with
 * a clear error.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { makeCertificates, qemuTlsArgs } from '../support/tls-certs.js';
import { qemuIo, requireTool, run } from '../support/tools.js';
import { assertBuilt, serveFails, startDaemon, type Daemon } from './harness.js';

assertBuilt();

describe.skipIf(!requireTool('openssl', 'qemu-io', 'nbdinfo'))('NBD over TLS through the daemon', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  let certs: ReturnType<typeof makeCertificates>;

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    certs = makeCertificates(tmp.path, 'daemon');
    d = await startDaemon(path.join(tmp.path, 'data'), { args: ['--nbd-tls-cert', certs.cert, '--nbd-tls-key', certs.key] });
  });
  afterAll(async () => {
    await d?.stop();
    tmp?.cleanup();
  });

  it('exports print nbds:// URIs; TLS clients read and write; plaintext TCP is refused; the unix socket is plaintext', () => {
    expect(d.logs()).toMatch(/nbd listening.*tls.*require|nbd listening.*require/);
    d.cliOk(['volume', 'create', 'secure', '16M']);
    const exp = d.json<{ uris: string[] }>(['volume', 'export-nbd', 'secure']);
    const port = Number(d.nbdAddress!.split(':').pop());
    expect(exp.uris[0]).toBe(`nbds://127.0.0.1:${port}/default/secure`);

    const io = qemuIo([...qemuTlsArgs(certs.caDir, port, 'default/secure'), '-c', 'write -P 0x42 0 1M', '-c', 'read -P 0x42 0 1M']);
    expect(io.code, io.stderr).toBe(0);
    expect(io.stdout).not.toMatch(/Pattern verification failed/);
    const info = run('nbdinfo', ['--size', `${exp.uris[0]}?tls-certificates=${certs.caDir}`]);
    expect(info.code, info.stderr).toBe(0);
    expect(info.stdout.trim()).toBe(String(16 * 1024 * 1024));

    const plain = qemuIo(['-f', 'raw', '-c', 'read 0 4k', `nbd://127.0.0.1:${port}/default/secure`]);
    expect(plain.code).not.toBe(0);
    expect(plain.stderr).toMatch(/TLS negotiation required/);
    const local = qemuIo(['-f', 'raw', '-c', 'read -P 0x42 0 1M', exp.uris[1]!]);
    expect(local.code, local.stderr).toBe(0);
  });

  it('refuses to start with half a TLS configuration, an unknown mode, or files that are not a PEM pair', async () => {
    const dataDir = path.join(tmp.path, 'bad');
    const onlyCert = await serveFails(['--data-dir', dataDir, '--listen', '127.0.0.1:0', '--nbd-tls-cert', certs.cert]);
    expect(onlyCert.code).toBe(2);
    expect(onlyCert.stderr).toMatch(/needs both a certificate and its key/);
    const badMode = await serveFails(['--data-dir', dataDir, '--listen', '127.0.0.1:0', '--nbd-tls-cert', certs.cert, '--nbd-tls-key', certs.key, '--nbd-tls', 'maybe']);
    expect(badMode.code).toBe(2);
    expect(badMode.stderr).toMatch(/'require' or 'offer'/);
    const notPem = path.join(tmp.path, 'not.pem');
    writeFileSync(notPem, 'not a key\n');
    const badKey = await serveFails(['--data-dir', dataDir, '--listen', '127.0.0.1:0', '--nbd-tls-cert', certs.cert, '--nbd-tls-key', notPem]);
    expect(badKey.code).toBe(1);
    expect(badKey.stderr).toMatch(/not a usable PEM pair/);
    const missing = await serveFails(['--data-dir', dataDir, '--listen', '127.0.0.1:0', '--nbd-tls-cert', certs.cert, '--nbd-tls-key', path.join(tmp.path, 'nope.pem')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read the NBD TLS key/);
  });
});

/**
 * Test certificates for NBD over TLS, made with openssl: a CA, and a server certificate for
 * 127.0.0.1 / localhost signed by it (the key usages GnuTLS, which QEMU and libnbd use, insist on).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { expectSuccess, run } from './tools.js';

/** A CA and a server certificate it signed, under dir; caDir holds ca-cert.pem (the layout QEMU and libnbd read). */
export function makeCertificates(dir: string, name: string): { caDir: string; cert: string; key: string } {
  const caDir = path.join(dir, `${name}-ca`);
  mkdirSync(caDir, { recursive: true });
  const f = (n: string) => path.join(dir, `${name}-${n}`);
  const ossl = (args: string[]) => expectSuccess(run('openssl', args), `openssl ${args[0]}`);
  writeFileSync(f('ca.cnf'), '[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n');
  writeFileSync(
    f('server.cnf'),
    '[v3]\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n',
  );
  ossl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca-key.pem'), '-out', path.join(caDir, 'ca-cert.pem'), '-days', '2', '-subj', `/CN=${name} test CA`, '-extensions', 'v3', '-config', f('ca.cnf')]);
  ossl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('server-key.pem'), '-out', f('server.csr'), '-subj', '/CN=127.0.0.1', '-config', f('server.cnf')]);
  ossl(['x509', '-req', '-in', f('server.csr'), '-CA', path.join(caDir, 'ca-cert.pem'), '-CAkey', f('ca-key.pem'), '-CAcreateserial', '-out', f('server-cert.pem'), '-days', '2', '-extensions', 'v3', '-extfile', f('server.cnf')]);
  return { caDir, cert: f('server-cert.pem'), key: f('server-key.pem') };
}

/** qemu-io's arguments for the export over TLS, trusting the CA in caDir. */
export function qemuTlsArgs(caDir: string, port: number, exportName = 'vol'): string[] {
  return ['--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${caDir}`, '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=${exportName},tls-creds=tls0`];
}


/**
 * Real S3 servers for tests: moto_server (about 1.5 s to start) and a single-node Ceph radosgw
 * (about 13 s: start it once per test file, in beforeAll). Each runs on free loopback ports inside
 * its own temp folder, which stop() removes after killing every process it started.
 *
 *   const gate = s3ServerAvailable('radosgw');          // false: skip; under CI=true: throws
 *   describe.skipIf(!gate)('...', () => { let server: S3TestServer; beforeAll(async () => { server = await startRadosgw(); }); ... });
 *
 * The recipe for radosgw is the one in shared/notes/s3.md: monitor speaking msgr v1 only, a
 * memstore OSD, auth none, pool size 1, the beast frontend; no mgr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { makeTempDir } from './tmp.js';
import { expectSuccess, requireTool, runAsync } from './tools.js';

export type S3ServerKind = 'moto' | 'radosgw';

const TOOLS: Record<S3ServerKind, readonly string[]> = {
  moto: ['moto_server'],
  radosgw: ['radosgw', 'radosgw-admin', 'ceph-mon', 'ceph-osd', 'monmaptool', 'ceph'],
};

/** True when the server's programs are on PATH; false (skip) when not, or throws under CI=true. */
export function s3ServerAvailable(kind: S3ServerKind): boolean {
  return requireTool(...TOOLS[kind]);
}

export interface S3TestServer {
  readonly kind: S3ServerKind;
  /** http://127.0.0.1:PORT */
  readonly endpoint: string;
  readonly port: number;
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** The server's own folder (logs, data). */
  readonly dir: string;
  /** Kills the S3 process with SIGKILL (the server vanishes; stop() still cleans up). */
  kill(): Promise<void>;
  /** Starts it again on the same port after kill() (moto forgets its buckets; radosgw keeps them). */
  restart(): Promise<void>;
  /**
   * Stops the S3 process without ending it (SIGSTOP), as an operator pausing it or a hung host:
   * the kernel still takes connections, nothing answers them, and it keeps its data. resume()
   * (SIGCONT) lets it answer again, the requests that waited included.
   */
  pause(): void;
  resume(): void;
  /** Kills everything it started and removes its folder. */
  stop(): Promise<void>;
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Starts a long-running process with its output in `logPath`. */
function startProcess(cmd: string, args: readonly string[], logPath: string, env?: Record<string, string>): ChildProcess {
  const log = openSync(logPath, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', log, log], env: env === undefined ? process.env : { ...process.env, ...env } });
  closeSync(log);
  running.add(child);
  child.once('exit', () => running.delete(child));
  child.once('error', () => running.delete(child));
  return child;
}

/** Sends SIGSTOP or SIGCONT to a running process (pause()/resume() of a server). */
function signalProcess(child: ChildProcess | undefined, signal: 'SIGSTOP' | 'SIGCONT'): void {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) throw new Error(`no running process to send ${signal} to`);
  child.kill(signal);
}

async function killProcess(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await exited;
}

function logTail(logPath: string): string {
  try {
    return readFileSync(logPath, 'utf8').split('\n').slice(-30).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Polls until `ready` is true; throws with the log's tail if the process exits or time runs out. */
async function waitUntil(what: string, ready: () => Promise<boolean>, child: ChildProcess | undefined, logPath: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child !== undefined && (child.exitCode !== null || child.signalCode !== null)) {
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready:\n${logTail(logPath)}`);
    }
    if (await ready()) return;
    if (Date.now() > deadline) throw new Error(`${what} was not ready in ${timeoutMs} ms:\n${logTail(logPath)}`);
    // Readiness has no event to await: poll at a short interval.
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function answersHttp(endpoint: string): Promise<boolean> {
  try {
    const response = await fetch(endpoint, { signal: AbortSignal.timeout(2_000) });
    await response.arrayBuffer();
    return true;
  } catch {
    return false;
  }
}

export interface MotoOptions {
  /** Enforce SigV4 with IAM keys from the first request on (INITIAL_NO_AUTH_ACTION_COUNT=0). */
  readonly enforceAuth?: boolean;
}

/** moto_server on a free port, in its own folder. Any access key works unless enforceAuth. */
export async function startMoto(options: MotoOptions = {}): Promise<S3TestServer> {
  const tmp = makeTempDir();
  const port = await freePort();
  const logPath = path.join(tmp.path, 'moto.log');
  const env: Record<string, string> = options.enforceAuth ? { INITIAL_NO_AUTH_ACTION_COUNT: '0' } : {};
  let child: ChildProcess | undefined;
  const endpoint = `http://127.0.0.1:${port}`;
  const start = async (): Promise<void> => {
    child = startProcess('moto_server', ['-H', '127.0.0.1', '-p', String(port)], logPath, env);
    await waitUntil('moto_server', () => answersHttp(`${endpoint}/moto-api/`), child, logPath);
  };
  await start();
  return {
    kind: 'moto',
    endpoint,
    port,
    region: 'us-east-1',
    accessKeyId: 'moto-test-key',
    secretAccessKey: 'moto-test-secret',
    dir: tmp.path,
    kill: () => killProcess(child),
    restart: start,
    pause: () => signalProcess(child, 'SIGSTOP'),
    resume: () => signalProcess(child, 'SIGCONT'),
    stop: async () => {
      await killProcess(child);
      tmp.cleanup();
    },
  };
}

/** The monitor, OSD and gateway of one single-node Ceph cluster: ceph.conf from the recipe. */
function cephConf(dir: string, monPort: number, rgwPort: number, osdPortMin: number, fsid: string, options: RadosgwOptions): string {
  return `[global]
fsid = ${fsid}
mon host = [v1:127.0.0.1:${monPort}]
ms bind port min = ${osdPortMin}
ms bind port max = ${osdPortMin + OSD_PORT_SPAN}
mon initial members = a
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
osd crush chooseleaf type = 0
${objectStoreConf(dir, options)}
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
pid file = ${dir}/run/$name.pid
log file = ${dir}/log/$name.log
crash dir = ${dir}/crash
exec dir = ${dir}/run
keyring = ${dir}/keyring
mon data = ${dir}/mon/$name
osd data = ${dir}/osd/$name
mon data avail crit = 1
mon data avail warn = 2

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}${options.frontendOptions === undefined ? '' : ` ${options.frontendOptions}`}
rgw data = ${dir}/rgw
rgw enable usage log = false
${(options.gatewayConf ?? []).join('\n')}
`;
}

/**
 * The OSD's object store: memstore (objects kept as in-memory buffers; Ceph's test fixture, the
 * default here, quick to start) or BlueStore, Ceph's production store, on a file it creates
 * (O_DIRECT, which tmpfs takes since Linux 6.6) with its RocksDB on the same file, as one-device
 * OSDs are deployed.
 */
function objectStoreConf(dir: string, options: RadosgwOptions): string {
  const bluestore = options.bluestore;
  if (bluestore === undefined) return `osd objectstore = memstore\nmemstore device bytes = ${options.memstoreBytes ?? DEFAULT_MEMSTORE_BYTES}`;
  return [
    'osd objectstore = bluestore',
    `bluestore block path = ${bluestore.blockPath ?? path.join(dir, 'osd', 'block')}`,
    'bluestore block create = true',
    `bluestore block size = ${bluestore.blockBytes}`,
    // One device: no separate DB or WAL device to create.
    'bluestore block db create = false',
    'bluestore block wal create = false',
    // The OSD's cache as a small host would size it (the default target is 4 GiB).
    `osd memory target = ${bluestore.memoryTargetBytes ?? DEFAULT_BLUESTORE_MEMORY_TARGET_BYTES}`,
  ].join('\n');
}

/** Ports an OSD may bind: it takes four from a range (6800-7300 by default, shared by every cluster). */
const OSD_PORT_SPAN = 40;
/** Where this cluster's OSD port range is drawn from (below Linux's ephemeral ports). */
const OSD_PORT_FLOOR = 20_000;
const OSD_PORT_CEILING = 32_000;

/**
 * A single-node radosgw (Ceph 16 here) with one S3 user; about 13 s to start. A start that fails
 * (say, a port taken by another process between freePort() and the bind) is tried once more from
 * scratch, in a new folder on new ports.
 */
export async function startRadosgw(options: RadosgwOptions = {}): Promise<S3TestServer> {
  try {
    return await startRadosgwOnce(options);
  } catch (err) {
    process.stderr.write(`radosgw did not start, trying once more: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}\n`);
    return startRadosgwOnce(options);
  }
}

export interface RadosgwOptions {
  /** The memstore OSD's size (default 512 MiB, plenty for tests; the S3 bench needs GiBs). */
  readonly memstoreBytes?: number;
  /** A BlueStore OSD instead of memstore: its block file (default in the cluster's folder) and size. */
  readonly bluestore?: { readonly blockPath?: string; readonly blockBytes: number; readonly memoryTargetBytes?: number };
  /** Options added to the beast frontend's line (the bench: tcp_nodelay=1). */
  readonly frontendOptions?: string;
  /** Lines added to the gateway's section of ceph.conf (the bench: garbage collected at once). */
  readonly gatewayConf?: readonly string[];
}

const DEFAULT_MEMSTORE_BYTES = 512 * 1024 * 1024;
/** BlueStore's memory target when none is given: Ceph's minimum advice for an OSD. */
const DEFAULT_BLUESTORE_MEMORY_TARGET_BYTES = 2 * 1024 * 1024 * 1024;

async function startRadosgwOnce(options: RadosgwOptions): Promise<S3TestServer> {
  const tmp = makeTempDir();
  const dir = tmp.path;
  const children: ChildProcess[] = [];
  let gateway: ChildProcess | undefined;
  try {
    const [monPort, rgwPort] = [await freePort(), await freePort()];
    for (const sub of ['run', 'log', 'crash', 'mon/mon.a', 'osd/osd.0', 'rgw']) mkdirSync(path.join(dir, sub), { recursive: true });
    const conf = path.join(dir, 'ceph.conf');
    const fsid = randomUUID();
    const osdPortMin = OSD_PORT_FLOOR + Math.floor(Math.random() * (OSD_PORT_CEILING - OSD_PORT_FLOOR - OSD_PORT_SPAN));
    writeFileSync(conf, cephConf(dir, monPort, rgwPort, osdPortMin, fsid, options));
    const c = ['-c', conf];
    const step = async (what: string, cmd: string, args: readonly string[]): Promise<string> =>
      expectSuccess(await runAsync(cmd, [...c, ...args], { timeoutMs: 60_000 }), what).stdout;
    await step('monmaptool', 'monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v1:127.0.0.1:${monPort}]`, path.join(dir, 'monmap')]);
    await step('ceph-mon --mkfs', 'ceph-mon', ['-i', 'a', '--mkfs', '--monmap', path.join(dir, 'monmap')]);
    children.push(startProcess('ceph-mon', [...c, '-i', 'a', '-f'], path.join(dir, 'log', 'mon.out')));
    await step('ceph-osd --mkfs', 'ceph-osd', ['-i', '0', '--mkfs']);
    const osdFsid = readFileSync(path.join(dir, 'osd', 'osd.0', 'fsid'), 'utf8').trim();
    await step('ceph osd new', 'ceph', ['--connect-timeout', '30', 'osd', 'new', osdFsid, '0']);
    // A fresh OSD is now and then refused by the monitor while it joins ('wrong fsid' in its log)
    // and exits; started again on the same data, it joins. Three tries, then give up.
    for (let osdTry = 1; ; osdTry++) {
      const osd = startProcess('ceph-osd', [...c, '-i', '0', '-f'], path.join(dir, 'log', 'osd.out'));
      children.push(osd);
      try {
        await waitUntil(
          'ceph-osd',
          async () => /1 up/.test((await runAsync('ceph', [...c, '--connect-timeout', '10', 'osd', 'stat'], { timeoutMs: 15_000 })).stdout),
          osd,
          path.join(dir, 'log', 'osd.0.log'),
        );
        break;
      } catch (err) {
        if (osdTry >= 3 || osd.exitCode === null) throw err;
        process.stderr.write(`ceph-osd exited while joining (try ${osdTry}); starting it again\n`);
      }
    }
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    const rgwLog = path.join(dir, 'log', 'client.rgw.a.log');
    const startGateway = async (): Promise<void> => {
      gateway = startProcess('radosgw', [...c, '-n', 'client.rgw.a', '-f'], path.join(dir, 'log', 'rgw.out'));
      await waitUntil('radosgw', () => answersHttp(endpoint), gateway, rgwLog);
    };
    await startGateway();
    const accessKeyId = 'STRATATESTKEY';
    const secretAccessKey = 'strata-test-secret-0123456789';
    await step('radosgw-admin user create', 'radosgw-admin', [
      'user', 'create', '--uid', 'strata-test', '--display-name', 'Strata test', '--access-key', accessKeyId, '--secret', secretAccessKey,
    ]);
    const stopAll = async (): Promise<void> => {
      await killProcess(gateway);
      for (const child of children.reverse()) await killProcess(child);
    };
    return {
      kind: 'radosgw',
      endpoint,
      port: rgwPort,
      region: 'us-east-1',
      accessKeyId,
      secretAccessKey,
      dir,
      kill: () => killProcess(gateway),
      restart: startGateway,
      pause: () => signalProcess(gateway, 'SIGSTOP'),
      resume: () => signalProcess(gateway, 'SIGCONT'),
      stop: async () => {
        await stopAll();
        tmp.cleanup();
      },
    };
  } catch (err) {
    await killProcess(gateway);
    for (const child of children.reverse()) await killProcess(child);
    tmp.cleanup();
    throw err;
  }
}

/** A client with the server's keys given directly: for test setup only (stores use a profile). */
export function adminClient(server: S3TestServer): S3Client {
  return new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

/** Creates a bucket with a fresh name and returns the name. */
export async function createTestBucket(server: S3TestServer, stem = 'strata-test'): Promise<string> {
  const bucket = `${stem}-${randomUUID().slice(0, 8)}`;
  const client = adminClient(server);
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } finally {
    client.destroy();
  }
  return bucket;
}

/**
 * Points the AWS SDK's default credential chain of this test process at a shared credentials file
 * of our own, with one profile per entry, the way an operator configures the daemon (no keys in
 * options), in a folder of `server`'s. Also turns instance-metadata lookups off, so a missing profile never sends traffic
 * off this machine. Call once per test file (each runs in its own process).
 */
export function useCredentialsProfiles(server: S3TestServer, profiles: Record<string, { accessKeyId: string; secretAccessKey: string }>): string {
  // In the server's folder, which stop() removes; a new folder per call, as the SDK caches a file by its path.
  const dir = mkdtempSync(path.join(server.dir, 'aws-'));
  const credentialsFile = path.join(dir, 'credentials');
  const text = Object.entries(profiles)
    .map(([name, keys]) => `[${name}]\naws_access_key_id = ${keys.accessKeyId}\naws_secret_access_key = ${keys.secretAccessKey}\n`)
    .join('\n');
  writeFileSync(credentialsFile, text, { mode: 0o600 });
  writeFileSync(path.join(dir, 'config'), '');
  process.env.AWS_SHARED_CREDENTIALS_FILE = credentialsFile;
  process.env.AWS_CONFIG_FILE = path.join(dir, 'config');
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  delete process.env.AWS_ACCESS_KEY_ID;
  delete process.env.AWS_SECRET_ACCESS_KEY;
  delete process.env.AWS_SESSION_TOKEN;
  delete process.env.AWS_PROFILE;
  return credentialsFile;
}

/**
 * The composition root of `strata serve`: config -> data folder lock -> token -> catalog and
 * volume service (recovered before anything is served) -> trash expiry (caught up, then a timer)
 * -> exports -> bucket deletes a stopped daemon left (settled; purges resumed as jobs) -> REST API
 * -> listening. And the way back on SIGTERM/SIGINT: stop accepting, let running requests and jobs finish for a grace
 * period, cancel what is left, close the volume service (images, catalog), release the lock.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { ApiMetrics, buildRestApi } from '../api/rest/index.js';
import { buildS3Api } from '../api/s3/index.js';
import { S3Metrics } from '../api/s3/metrics.js';
import { SecretBox } from '../objects/users/secret-box.js';
import { UserStore } from '../objects/users/user-store.js';
import { openDaemonObjectStore } from './object-store.js';
import { isStorageError } from '../core/errors.js';
import { strataVersion } from '../core/version.js';
import type { JobInfo } from '../volume/types.js';
import { openVolumeBackend, type VolumeBackend, type VolumeBackendFactory } from './backend.js';
import { settleBucketRemovals } from './bucket-removals.js';
import { ExportManager, type VhostUserExportFactory } from './exports.js';
import { makeFolders } from './folders.js';
import { DEFAULT_POOL, formatListen, type DaemonConfig, type ListenAddress } from './config.js';
import { lockDataDir, type DataDirLock } from './lock.js';
import { createLogger } from './logger.js';
import { loadOrCreateToken } from './token.js';
import { SealPolicyTimer } from './seal-policy.js';
import { TierCooling } from './tier-cooling.js';
import { TrashExpiry } from './trash-expiry.js';

export const CATALOG_DIR_NAME = 'catalog';
export const POOLS_DIR_NAME = 'pools';
/** The AES-256-GCM key that seals the S3 secret keys in the catalog (mode 0600). */
export const S3_SECRET_KEY_FILE = 's3-secrets.key';

export interface RunningDaemon {
  /** The base URL the API listens on (http://host:port). */
  readonly url: string;
  /** The S3 endpoint's base URL (undefined: --s3-listen off). */
  readonly s3Url: string | undefined;
  readonly config: DaemonConfig;
  readonly logger: Logger;
  readonly app: FastifyInstance;
  readonly backend: VolumeBackend;
  readonly exports: ExportManager;
  /** Clean shutdown; resolves when everything is closed. Safe to call more than once. */
  shutdown(reason: string): Promise<void>;
}

export interface StartOptions {
  /** Builds the catalog and volume service (default: the LevelDB catalog and LocalVolumeService). */
  backendFactory?: VolumeBackendFactory;
  /** Where log lines go (default stdout). */
  writeLog?: (text: string) => void;
  /** Builds vhost-user-blk exports (default: src/export/vhost-user). */
  vhostUser?: VhostUserExportFactory;
}

function terminal(job: JobInfo): boolean {
  return job.state === 'succeeded' || job.state === 'failed' || job.state === 'cancelled';
}

async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

export async function startDaemon(config: DaemonConfig, options: StartOptions = {}): Promise<RunningDaemon> {
  const logger = createLogger({ format: config.logFormat, level: config.logLevel, ...(options.writeLog ? { write: options.writeLog } : {}) });
  makeFolders(config.dataDir);
  const lock: DataDirLock = lockDataDir(config.dataDir);
  let backend: VolumeBackend | undefined;
  let exports: ExportManager | undefined;
  let trashExpiry: TrashExpiry | undefined;
  let tierCooling: TierCooling | undefined;
  let sealPolicy: SealPolicyTimer | undefined;
  try {
    const token = loadOrCreateToken(config.dataDir);
    if (token.created) logger.info({ path: token.path }, 'generated the API token');
    const catalogDir = path.join(config.dataDir, CATALOG_DIR_NAME);
    const poolsDir = path.join(config.dataDir, POOLS_DIR_NAME);
    const firstStart = !existsSync(catalogDir);
    makeFolders(poolsDir);

    const factory = options.backendFactory ?? openVolumeBackend;
    backend = await factory({ dataDir: config.dataDir, catalogDir, poolsDir, config, logger });
    // The S3 object model holds chunk references in the pools: it is registered with the backend
    // before recovery audits them (also with the S3 endpoint off), and recovers after it.
    const objectStore = await openDaemonObjectStore({ dataDir: config.dataDir, catalog: backend.catalog, volumes: backend.service, backend, bucketPool: DEFAULT_POOL, logger });
    const started = Date.now();
    const report = await backend.recover();
    logger.info({ ms: Date.now() - started, ...(report ?? {}) }, 'recovered');
    await objectStore.recover();

    if (firstStart) {
      const pools = await backend.service.listPools();
      if (!pools.some((p) => p.name === DEFAULT_POOL)) {
        await backend.service.createPool(DEFAULT_POOL);
        logger.info({ pool: DEFAULT_POOL }, 'created the default pool');
      }
    }

    // Catch up on what expired in the trash while the daemon was down, then purge on a timer.
    trashExpiry = new TrashExpiry({ service: backend.service, logger, intervalMs: config.trashCheckIntervalMs });
    await trashExpiry.start();
    // Packs of tiered dedup pools not read for their cooling period move to the tier on a timer.
    const tieredPools = backend.tieredPools?.bind(backend);
    if (tieredPools !== undefined) {
      tierCooling = new TierCooling({ tieredPools, logger, intervalMs: config.tierCoolingIntervalMs });
      tierCooling.start();
    }
    // Active layers of dedup pools with a seal policy are frozen and sealed on a timer.
    sealPolicy = new SealPolicyTimer({ service: backend.service, logger, intervalMs: config.sealPolicyIntervalMs });
    sealPolicy.start();

    exports = new ExportManager({
      service: backend.service,
      store: backend.exportStore,
      logger,
      nbdListen: config.nbdListen,
      nbdSocketPath: config.nbdSocketPath,
      nbdPollUs: config.nbdPollUs,
      nbdTls: config.nbdTls,
      vhostUser: options.vhostUser ?? (await defaultVhostUserFactory(config.vhostPollUs)),
      vhostOnNoSpace: config.vhostOnNoSpace,
      ...restoreDelayForTests(),
    });
    // Exports before the API: a request never sees an export missing that is about to come back.
    const restored = await exports.start();
    if (restored.started + restored.failed > 0) logger.info(restored, 'exports restored');
    // Bucket deletes a stopped daemon left half done: settled before S3 serves; purges resume as jobs.
    await settleBucketRemovals(objectStore.model, backend.service, logger);

    const users = new UserStore(backend.catalog, SecretBox.openOrCreate(path.join(config.dataDir, S3_SECRET_KEY_FILE)));
    let closing = false;
    const metrics = new ApiMetrics();
    const s3Metrics = new S3Metrics();
    metrics.addSource(() => s3Metrics.render());
    const app = await buildRestApi({
      service: backend.service,
      token: token.token,
      logger,
      version: strataVersion(),
      dataDir: config.dataDir,
      metrics,
      exports,
      closing: () => closing,
      metricsAuth: config.metricsAuth,
      users,
      buckets: objectStore.model,
    });
    // The S3 endpoint: its own fastify instance on its own address. The object model recovered
    // before the S3 listener opens: no request sees a put a kill left.
    const s3App = config.s3Listen === undefined ? undefined : await buildS3Api({ keys: (id) => users.secretFor(id), objects: objectStore.service, domains: config.s3Domains, logger, metrics: s3Metrics });
    await app.listen({ host: config.listen.host, port: config.listen.port });
    const addr = app.server.address();
    const port = addr !== null && typeof addr === 'object' ? addr.port : config.listen.port;
    const url = `http://${formatListen({ host: config.listen.host, port })}`;
    // The S3 endpoint listens before 'listening' is logged: whoever waits for that line finds both.
    let s3Url: string | undefined;
    if (s3App !== undefined && config.s3Listen !== undefined) {
      try {
        await s3App.listen({ host: config.s3Listen.host, port: config.s3Listen.port });
      } catch (err) {
        await app.close();
        throw Object.assign(err as Error, { listenAddress: config.s3Listen, listenFlag: '--s3-listen' });
      }
      const s3Addr = s3App.server.address();
      s3Url = `http://${formatListen({ host: config.s3Listen.host, port: s3Addr !== null && typeof s3Addr === 'object' ? s3Addr.port : config.s3Listen.port })}`;
      logger.info({ endpoint: s3Url, domains: config.s3Domains.join(',') || 'none (path style only)' }, 's3 endpoint ready');
    }
    logger.info({ url, dataDir: config.dataDir, pid: process.pid, version: strataVersion(), metricsAuth: config.metricsAuth }, 'listening');

    const openBackend = backend;
    const openExports = exports;
    const openTrashExpiry = trashExpiry;
    const openTierCooling = tierCooling;
    const openSealPolicy = sealPolicy;
    let shutdownPromise: Promise<void> | undefined;
    const shutdown = (reason: string): Promise<void> => {
      shutdownPromise ??= (async () => {
        closing = true;
        logger.info({ reason }, 'shutting down');
        const grace = config.shutdownGraceMs;
        // Stop accepting; in-flight requests may finish within the grace period, then their
        // connections are cut (an upload cut short fails and leaves nothing behind).
        const forceTimer = setTimeout(() => {
          logger.warn({ graceMs: grace }, 'closing the connections still open');
          app.server.closeAllConnections();
          s3App?.server.closeAllConnections();
        }, grace);
        let stage = 'closing the API';
        // A promise that nothing can settle any more would end the process with status 13: say
        // where (a bug, but one that must not pass silently).
        const onDrained = () => {
          app.server.getConnections((_e, count) => logger.error({ stage, connections: count }, 'shutdown stalled: nothing left to wait for'));
        };
        process.on('beforeExit', onDrained);
        const closed = Promise.all([app.close(), s3App?.close()]);
        stage = 'stopping the trash timer';
        await openTrashExpiry.stop();
        await openTierCooling?.stop();
        await openSealPolicy.stop();
        stage = 'waiting for jobs';
        await waitForJobs(openBackend, grace, logger);
        stage = 'closing the API';
        await closed;
        clearTimeout(forceTimer);
        stage = 'finishing the S3 clean-up';
        await objectStore?.close();
        stage = 'stopping the exports';
        await openExports.close();
        stage = 'closing the volume service and catalog';
        logger.debug(stage);
        await openBackend.close();
        process.off('beforeExit', onDrained);
        lock.release();
        logger.info('stopped');
      })();
      return shutdownPromise;
    };
    return { url, s3Url, config, logger, app, backend: openBackend, exports: openExports, shutdown };
  } catch (err) {
    await trashExpiry?.stop().catch(() => {});
    await tierCooling?.stop().catch(() => {});
    await sealPolicy?.stop().catch(() => {});
    if (exports !== undefined) await exports.close().catch(() => {});
    if (backend !== undefined) await backend.close().catch(() => {});
    lock.release();
    throw err;
  }
}

/** Lets running jobs finish for up to graceMs, then cancels the rest and waits for them briefly. */
async function waitForJobs(backend: VolumeBackend, graceMs: number, logger: Logger): Promise<void> {
  const deadline = Date.now() + graceMs;
  let running = (await backend.service.listJobs()).filter((j) => !terminal(j));
  if (running.length > 0) logger.info({ jobs: running.length }, 'waiting for running jobs');
  while (running.length > 0 && Date.now() < deadline) {
    await sleep(100);
    running = (await backend.service.listJobs()).filter((j) => !terminal(j));
  }
  if (running.length === 0) return;
  for (const job of running) {
    logger.warn({ job: job.id, kind: job.kind, target: job.target }, 'cancelling job');
    await backend.service.cancelJob(job.id).catch((err: unknown) => {
      // NOT_FOUND: pruned; BUSY: it ended meanwhile.
      if (!isStorageError(err, 'NOT_FOUND') && !isStorageError(err, 'BUSY')) logger.warn({ err, job: job.id }, 'could not cancel job');
    });
  }
  const cancelDeadline = Date.now() + 5000;
  while (running.length > 0 && Date.now() < cancelDeadline) {
    await sleep(50);
    running = (await backend.service.listJobs()).filter((j) => !terminal(j));
  }
  if (running.length > 0) logger.warn({ jobs: running.map((j) => j.id) }, 'jobs still running at shutdown (recovery finishes or rolls them back at the next start)');
}

/** Throws a clear error when the data folder cannot be used. */
export function describeStartError(err: unknown, config: DaemonConfig): string {
  if (isStorageError(err)) return `${err.message} [${err.code}]`;
  const e = err as NodeJS.ErrnoException & { listenAddress?: ListenAddress; listenFlag?: string };
  const where = formatListen(e?.listenAddress ?? config.listen);
  const flag = e?.listenFlag ?? '--listen';
  if (e?.code === 'EADDRINUSE') return `cannot listen on ${where}: the address is in use (another daemon? choose another with ${flag})`;
  if (e?.code === 'EACCES' && e.syscall === 'listen') return `cannot listen on ${where}: permission denied (use a port above 1023)`;
  if (e?.code === 'EADDRNOTAVAIL') return `cannot listen on ${where}: the address is not on this host`;
  if (e?.code === 'EACCES' || e?.code === 'EROFS' || e?.syscall === 'mkdir') return `cannot use the data folder ${config.dataDir}: ${e.message}`;
  return e instanceof Error ? e.message : String(err);
}

/**
 * STRATA_TEST_RESTORE_DELAY_MS: wait that long between binding the NBD listeners and restoring
 * the exports, so that tests can connect inside that window every time (not for production use).
 */
function restoreDelayForTests(): { beforeRestore?: () => Promise<void> } {
  const delayMs = Number(process.env['STRATA_TEST_RESTORE_DELAY_MS'] ?? 0);
  return Number.isFinite(delayMs) && delayMs > 0 ? { beforeRestore: () => sleep(delayMs) } : {};
}

/** The vhost-user-blk backend (src/export/vhost-user), loaded when the daemon starts. */
async function defaultVhostUserFactory(pollWindowUs: number): Promise<VhostUserExportFactory | undefined> {
  const { VhostUserBlkExport } = await import('../export/vhost-user/export.js');
  return (options) =>
    new VhostUserBlkExport({
      socketPath: options.socketPath,
      queueCount: options.queueCount,
      readOnly: options.readOnly,
      serial: options.serial,
      poll: { windowUs: pollWindowUs },
      noSpace: options.onNoSpace,
      target: options.target,
      logger: (line, level) => options.logger[level](line),
    });
}

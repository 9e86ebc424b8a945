/**
 * The daemon's exports: volumes and snapshots served over NBD (one NbdServer on TCP and a unix
 * socket, one export name per target) and over vhost-user-blk (one unix socket per attached
 * volume). Each export holds a live device from the volume service; its record in the catalog
 * makes it come back when the daemon restarts (QEMU redials the same vhost-user socket, NBD
 * clients reconnect to the same name).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createSecureContext } from 'node:tls';
import type { Logger } from 'pino';
import type { ExportRecord } from '../volume/index.js';
import type { BlockDevice } from '../core/block-device.js';
import { StorageError, type ExportRef } from '../core/errors.js';
import type { Export } from '../core/export.js';
import { NbdExport } from '../export/nbd/export.js';
import { NbdServer, type NbdTlsOptions } from '../export/nbd/server.js';
import type { VolumeService } from '../volume/types.js';
import type { ExportStore } from './backend.js';
import { formatListen, type ListenAddress, type NbdTlsConfig } from './config.js';
import { ensureSocketFolder } from './folders.js';
import type { ExportInfo, ExportRequest, ExportService, ExportStats, NbdStats, NoSpacePolicy, VhostStats } from '../api/rest/export-service.js';
import { randomHex } from '../sys/random-hex.js';


/** Builds a vhost-user-blk export (src/export/vhost-user), injected so this module stays testable. */
export type VhostUserExportFactory = (options: {
  socketPath: string;
  queueCount: number;
  readOnly: boolean;
  serial: string;
  logger: Logger;
  /** What a guest's write the pool has no room for does (the record's, else the daemon's default). */
  onNoSpace: NoSpacePolicy;
  /** pool/volume, for log lines. */
  target: string;
}) => ManagedExport;

/**
 * What an export reports of itself now: a vhost-user export whether its front-end is connected
 * (and since when) and its ring polls; an NBD export how many clients use it.
 */
export interface ManagedExportStats {
  /** NBD: connections using the export now. */
  clients?: number;
  /** vhost-user: a front-end is being served (one client at most). */
  connected?: boolean;
  /** vhost-user: when that front-end connected (Date.now() milliseconds). */
  connectedSinceMs?: number | undefined;
  /** Requests the device failed since the export started. */
  deviceErrors?: number;
  ringPolls?: number;
  ringPollHits?: number;
  /** vhost-user: guest requests waiting for space now. */
  waitingForSpace?: number;
}

/** An export as the manager holds it (stats() is optional: test doubles may have none). */
export interface ManagedExport extends Export {
  stats?(): ManagedExportStats;
  /** Space may have been freed: requests waiting for it are run again now. */
  retryWaitingForSpace?(): void;
}

export interface ExportManagerOptions {
  service: VolumeService;
  store: ExportStore;
  logger: Logger;
  /** NBD over TCP (undefined: off). */
  nbdListen: ListenAddress | undefined;
  /** NBD over a unix socket (undefined: off). */
  nbdSocketPath: string | undefined;
  /** Busy-poll window of idle NBD connections in microseconds (0: off; default 100). */
  nbdPollUs?: number;
  /** TLS on the NBD TCP listener (undefined: none). */
  nbdTls?: NbdTlsConfig | undefined;
  vhostUser?: VhostUserExportFactory;
  /** Runs between binding the NBD listeners and restoring the exports (tests widen that window). */
  beforeRestore?: () => Promise<void>;
  /** What a vhost-user guest's write the pool has no room for does, unless its export says (default 'wait'). */
  vhostOnNoSpace?: NoSpacePolicy;
}

interface Running {
  record: ExportRecord;
  device: BlockDevice;
  /** An NbdExport on the shared NBD server, or a vhost-user export with its own socket. */
  exp: ManagedExport;
}

export const MAX_VHOST_USER_QUEUES = 16;

/** Adds an export's ring polls (none for an export without stats()) to `into`. */
function addRingPolls(into: VhostStats, exp: ManagedExport): void {
  const stats = exp.stats?.();
  into.ringPolls += stats?.ringPolls ?? 0;
  into.ringPollHits += stats?.ringPollHits ?? 0;
}
/** sockaddr_un's sun_path holds 108 bytes including the terminating NUL. */
const MAX_UNIX_PATH_BYTES = 107;
const NBD_NAME_MAX_BYTES = 4096;
/** The export name clients send when they name none; the export under it is the default one. */
export const NBD_DEFAULT_EXPORT_NAME = '';

function newId(): string {
  return randomHex(8);
}

function exportNotFound(id: string): StorageError {
  return new StorageError('NOT_FOUND', `export '${id}' does not exist`, { fix: { operation: 'listExports', text: 'check the id; {} lists the exports' } });
}

export class ExportManager implements ExportService {
  private readonly nbd: NbdServer;
  private readonly running = new Map<string, Running>();
  /** The ring polls of vhost-user exports stopped since start (the counters stay monotonic). */
  private readonly stoppedRingPolls: VhostStats = { ringPolls: 0, ringPollHits: 0 };
  /** Serializes create/remove so that name and socket checks hold. */
  private queue: Promise<unknown> = Promise.resolve();
  private nbdTcpPort: number | undefined;

  constructor(private readonly options: ExportManagerOptions) {
    this.nbd = new NbdServer({
      log: (line, level) => options.logger[level](line),
      // Bound before the exports are restored, greeting nobody until they are (start()).
      holdUntilOpen: true,
      ...(options.nbdPollUs !== undefined ? { idlePollMaxUs: options.nbdPollUs } : {}),
    });
  }

  /**
   * Listens for NBD clients and starts every export recorded in the catalog. The listeners are
   * bound first (an address in use fails the start before any volume is opened) but greet no
   * client until every export is restored: a client that redials right after a restart waits a
   * moment instead of being told that its export does not exist.
   */
  async start(): Promise<{ started: number; failed: number }> {
    const { nbdListen, nbdSocketPath } = this.options;
    if (nbdSocketPath !== undefined) {
      checkSocketPath(nbdSocketPath, 'the NBD socket');
      ensureSocketFolder(nbdSocketPath, 'the NBD socket', "choose another with --nbd-socket (or 'off')");
    }
    const bind = async (where: string, flag: string, options: Parameters<NbdServer['listen']>[0]) => {
      try {
        await this.nbd.listen(options);
      } catch (err) {
        await this.nbd.close().catch(() => {});
        const e = err as NodeJS.ErrnoException;
        const why =
          e.code === 'EADDRINUSE'
            ? `the address is in use (qemu-nbd, nbdkit or another daemon? choose another with ${flag}, or 'off')`
            : e.message;
        throw new StorageError('IO_ERROR', `cannot listen for NBD on ${where}: ${why}`, { cause: err });
      }
    };
    if (nbdSocketPath !== undefined) await bind(nbdSocketPath, '--nbd-socket', { unixPath: nbdSocketPath });
    const tcpTls = this.options.nbdTls === undefined ? undefined : loadTls(this.options.nbdTls);
    if (nbdListen !== undefined) {
      await bind(formatListen(nbdListen), '--nbd-listen', { tcp: { host: nbdListen.host, port: nbdListen.port }, ...(tcpTls !== undefined ? { tcpTls } : {}) });
    }
    this.nbdTcpPort = this.nbd.tcpPort;
    await this.options.beforeRestore?.();
    const restored = await this.restore();
    this.nbd.open();
    if (nbdListen !== undefined || nbdSocketPath !== undefined) {
      this.options.logger.info(
        {
          ...(nbdListen !== undefined ? { tcp: formatListen({ host: nbdListen.host, port: this.nbdTcpPort ?? nbdListen.port }) } : {}),
          ...(nbdSocketPath !== undefined ? { socket: nbdSocketPath } : {}),
          ...(this.options.nbdTls !== undefined && nbdListen !== undefined ? { tls: this.options.nbdTls.mode } : {}),
          // The busy-poll window actually in use (0 also where polling is unavailable).
          pollUs: this.nbd.idlePoller !== undefined ? this.nbd.idlePollMaxUs : 0,
        },
        'nbd listening',
      );
    }
    return restored;
  }

  /** Starts every export recorded in the catalog; one that fails is logged and left for the operator. */
  private async restore(): Promise<{ started: number; failed: number }> {
    let started = 0;
    let failed = 0;
    for (const record of await this.options.store.list()) {
      try {
        await this.startRecord(record);
        started++;
      } catch (err) {
        failed++;
        // The record stays: the operator sees the failure in the log and removes or fixes it.
        this.options.logger.error({ export: record.id, type: record.type, target: targetName(record), err: (err as Error).message }, 'could not restore an export');
      }
    }
    return { started, failed };
  }

  /** The TCP port NBD listens on (the bound one when configured as 0). */
  get nbdPort(): number | undefined {
    return this.nbdTcpPort;
  }

  nbdStats(): NbdStats {
    const poller = this.nbd.idlePoller;
    return { connections: this.nbd.connectionCount, idlePolls: poller?.polls ?? 0, idlePollHits: poller?.hits ?? 0 };
  }

  /** vhost-user exports' polls of drained rings and their hits, since the daemon started. */
  vhostStats(): VhostStats {
    const total = { ...this.stoppedRingPolls };
    for (const r of this.running.values()) addRingPolls(total, r.exp);
    return total;
  }

  nbdAddresses(): { listen: string | null; socket: string | null } {
    const tcp = this.options.nbdListen;
    return {
      listen: tcp === undefined ? null : formatListen({ host: tcp.host, port: this.nbdTcpPort ?? tcp.port }),
      socket: this.options.nbdSocketPath ?? null,
    };
  }

  list(): ExportInfo[] {
    return [...this.running.values()].map((r) => this.describe(r.record)).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  info(id: string): ExportInfo {
    const running = this.running.get(id);
    if (running === undefined) throw exportNotFound(id);
    return this.describe(running.record);
  }

  create(request: ExportRequest): Promise<ExportInfo> {
    return this.serialized(async () => {
      const record = this.validate(request);
      await this.startRecord(record);
      try {
        await this.options.store.add(record);
      } catch (err) {
        await this.stopRunning(record.id);
        throw err;
      }
      this.options.logger.info({ export: record.id, type: record.type, target: targetName(record), name: record.name, socket: record.socketPath }, 'export started');
      return this.describe(record);
    });
  }

  remove(id: string): Promise<void> {
    return this.serialized(async () => {
      const running = this.running.get(id);
      if (running === undefined) throw exportNotFound(id);
      await this.options.store.remove(id);
      await this.stopRunning(id);
      this.options.logger.info({ export: id, type: running.record.type, target: targetName(running.record) }, 'export stopped');
    });
  }

  /** Stops serving (records stay: the exports come back at the next start). */
  async close(): Promise<void> {
    await this.queue.catch(() => {});
    for (const id of [...this.running.keys()]) {
      await this.stopRunning(id).catch((err: unknown) => this.options.logger.warn({ export: id, err: (err as Error).message }, 'stopping an export failed'));
    }
    await this.nbd.close();
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => {});
    return next;
  }

  private validate(request: ExportRequest): ExportRecord {
    const base = {
      id: newId(),
      pool: request.pool,
      volume: request.volume,
      readOnly: request.readOnly === true,
      createdAt: new Date().toISOString(),
    };
    if (request.type === 'nbd') {
      if (this.options.nbdListen === undefined && this.options.nbdSocketPath === undefined) {
        throw new StorageError('UNSUPPORTED', 'NBD is turned off in this daemon (nbdListen and nbdSocket are both off)');
      }
      const name = request.name ?? `${request.pool}/${request.volume}${request.snapshot === undefined ? '' : `@${request.snapshot}`}`;
      if (Buffer.byteLength(name) > NBD_NAME_MAX_BYTES) {
        throw new StorageError('INVALID_ARGUMENT', `an NBD export name must be at most ${NBD_NAME_MAX_BYTES} bytes`);
      }
      for (const r of this.running.values()) {
        if (r.record.type !== 'nbd' || r.record.name !== name) continue;
        if (name === NBD_DEFAULT_EXPORT_NAME) {
          throw new StorageError(
            'ALREADY_EXISTS',
            `the default NBD export (empty name) is already '${targetName(r.record)}' (export ${r.record.id}); unexport it first, or give this export a name`,
          );
        }
        throw new StorageError('ALREADY_EXISTS', `an NBD export named '${name}' already exists (id ${r.record.id})`);
      }
      return {
        ...base,
        type: 'nbd',
        ...(request.snapshot !== undefined ? { snapshot: request.snapshot } : {}),
        readOnly: base.readOnly || request.snapshot !== undefined,
        name,
      };
    }
    if (this.options.vhostUser === undefined) throw new StorageError('UNSUPPORTED', 'this daemon was built without vhost-user-blk');
    const socketPath = path.resolve(request.socketPath);
    checkSocketPath(socketPath, 'the vhost-user socket');
    const queueCount = request.queueCount ?? 1;
    if (!Number.isInteger(queueCount) || queueCount < 1 || queueCount > MAX_VHOST_USER_QUEUES) {
      throw new StorageError('INVALID_ARGUMENT', `queues must be 1 to ${MAX_VHOST_USER_QUEUES}, not ${queueCount}`);
    }
    const nbdSocketPath = this.options.nbdSocketPath;
    if (nbdSocketPath !== undefined && path.resolve(nbdSocketPath) === socketPath) {
      throw new StorageError('ALREADY_EXISTS', `socket ${socketPath} is this daemon's NBD socket`, { fix: { literal: true, text: 'choose another socket path' } });
    }
    const snapshot = request.snapshot;
    for (const r of this.running.values()) {
      if (r.record.socketPath === socketPath) {
        throw new StorageError('ALREADY_EXISTS', `socket ${socketPath} is already used by export ${r.record.id} (${targetName(r.record)})`, {
          fix: { operation: 'stopExports', exports: [exportRef(r.record)], text: 'choose another socket path, or stop that export first with {}' },
        });
      }
      // One attachment per target (the volume's head, or one snapshot): detach names it by target.
      if (r.record.type === 'vhost-user' && r.record.pool === request.pool && r.record.volume === request.volume && r.record.snapshot === snapshot) {
        const what = snapshot === undefined ? 'volume' : 'snapshot';
        throw new StorageError('BUSY', `${what} '${targetName(r.record)}' is already attached over vhost-user at ${r.record.socketPath}; detach it first`, {
          fix: { operation: 'stopExports', exports: [exportRef(r.record)], text: 'stop that attachment first with {}' },
        });
      }
    }
    const onNoSpace = request.onNoSpace;
    if (onNoSpace !== undefined && onNoSpace !== 'wait' && onNoSpace !== 'error') {
      throw new StorageError('INVALID_ARGUMENT', `onNoSpace must be 'wait' or 'error', not '${String(onNoSpace)}'`);
    }
    const policy = onNoSpace !== undefined ? { onNoSpace } : {};
    if (snapshot === undefined) return { ...base, type: 'vhost-user', socketPath, queueCount, ...policy };
    // A snapshot never changes: the guest sees a read-only disk (VIRTIO_BLK_F_RO), its writes fail.
    return { ...base, type: 'vhost-user', snapshot, readOnly: true, socketPath, queueCount, ...policy };
  }

  private async startRecord(record: ExportRecord): Promise<void> {
    const device = await this.options.service.openDevice(record.pool, record.volume, {
      ...(record.snapshot !== undefined ? { snapshot: record.snapshot } : {}),
      readOnly: record.readOnly,
      export: { id: record.id, type: record.type },
    });
    try {
      if (record.type === 'nbd') {
        const exp = new NbdExport(this.nbd, record.name!, { readOnly: record.readOnly, description: `strata ${targetName(record)}` });
        await exp.start(device);
        this.running.set(record.id, { record, device, exp });
        return;
      }
      ensureSocketFolder(record.socketPath!, 'the vhost-user socket', 'choose a socket path');
      // virtio-blk GET_ID: 20 bytes; the volume's id (16 hex digits) is stable across renames, and
      // a snapshot's is its own (a guest given both the volume and its snapshot tells them apart).
      const info =
        record.snapshot === undefined
          ? await this.options.service.volumeInfo(record.pool, record.volume)
          : await this.options.service.snapshotInfo(record.pool, record.volume, record.snapshot);
      const exp = this.options.vhostUser!({
        socketPath: record.socketPath!,
        queueCount: record.queueCount ?? 1,
        readOnly: record.readOnly || record.snapshot !== undefined,
        serial: info.id.slice(0, 20),
        logger: this.options.logger.child({ export: record.id, volume: targetName(record) }),
        onNoSpace: this.noSpacePolicy(record),
        target: targetName(record),
      });
      await exp.start(device);
      this.running.set(record.id, { record, device, exp });
    } catch (err) {
      await device.close().catch(() => {});
      throw err;
    }
  }

  private async stopRunning(id: string): Promise<void> {
    const running = this.running.get(id);
    if (running === undefined) return;
    this.running.delete(id);
    try {
      running.exp.requestShutdown();
      await running.exp.closed;
    } finally {
      addRingPolls(this.stoppedRingPolls, running.exp);
      await running.device.close();
    }
  }

  /** Every running export's clients, device errors and requests waiting for space, for /metrics. */
  exportStats(): ExportStats[] {
    return [...this.running.values()].map((r) => {
      const stats = r.exp.stats?.();
      return {
        id: r.record.id,
        type: r.record.type,
        target: targetName(r.record),
        clients: clientCount(stats),
        deviceErrors: stats?.deviceErrors ?? 0,
        waitingForSpace: stats?.waitingForSpace ?? 0,
      };
    });
  }

  /**
   * Space may have been freed in `pool` (a volume or snapshot deleted, a GC, the trash emptied):
   * the guests' requests waiting for space there are run again now rather than at their next retry.
   */
  spaceMayBeFree(pool: string): void {
    for (const r of this.running.values()) if (r.record.pool === pool) r.exp.retryWaitingForSpace?.();
  }

  /** A vhost-user export's policy for writes the pool has no room for: its own, else the daemon's. */
  private noSpacePolicy(record: ExportRecord): NoSpacePolicy {
    return record.onNoSpace ?? this.options.vhostOnNoSpace ?? 'wait';
  }

  private describe(record: ExportRecord): ExportInfo {
    const uris: string[] = [];
    if (record.type === 'nbd') {
      const name = encodeURIComponent(record.name!).replace(/%2F/gi, '/').replace(/%40/g, '@');
      // The default export's URIs name no export (no path): what qemu and libnbd send as ''.
      const exportPath = record.name === NBD_DEFAULT_EXPORT_NAME ? '' : `/${name}`;
      const tcp = this.options.nbdListen;
      // nbds:// (TLS) when the TCP listener has a certificate: libnbd tools then start TLS.
      const scheme = this.options.nbdTls !== undefined ? 'nbds' : 'nbd';
      if (tcp !== undefined) uris.push(`${scheme}://${formatListen({ host: tcp.host, port: this.nbdTcpPort ?? tcp.port })}${exportPath}`);
      if (this.options.nbdSocketPath !== undefined) uris.push(`nbd+unix://${exportPath}?socket=${this.options.nbdSocketPath}`);
    }
    const stats = this.running.get(record.id)?.exp.stats?.();
    const sinceMs = stats?.connected === true ? stats.connectedSinceMs : undefined;
    return {
      id: record.id,
      type: record.type,
      pool: record.pool,
      volume: record.volume,
      snapshot: record.snapshot,
      readOnly: record.readOnly,
      name: record.name,
      uris,
      socketPath: record.socketPath,
      queueCount: record.queueCount,
      createdAt: record.createdAt,
      clients: clientCount(stats),
      connectedSince: sinceMs === undefined ? null : new Date(sinceMs).toISOString(),
      onNoSpace: record.type === 'vhost-user' ? this.noSpacePolicy(record) : null,
      waitingForSpace: stats?.waitingForSpace ?? 0,
    };
  }
}

function exportRef(record: ExportRecord): ExportRef {
  return { id: record.id, type: record.type, pool: record.pool, volume: record.volume, ...(record.snapshot !== undefined ? { snapshot: record.snapshot } : {}) };
}

/** NBD: its connections; vhost-user: 1 while a front-end is served. */
function clientCount(stats: ManagedExportStats | undefined): number {
  return stats?.clients ?? (stats?.connected === true ? 1 : 0);
}

function targetName(record: Pick<ExportRecord, 'pool' | 'volume' | 'snapshot'>): string {
  return `${record.pool}/${record.volume}${record.snapshot === undefined ? '' : `@${record.snapshot}`}`;
}

function checkSocketPath(socketPath: string, what: string): void {
  if (Buffer.byteLength(socketPath) > MAX_UNIX_PATH_BYTES) {
    throw new StorageError('INVALID_ARGUMENT', `${what} path ${socketPath} is longer than ${MAX_UNIX_PATH_BYTES} bytes (a unix socket limit); choose a shorter one`);
  }
}

/** The TCP listener's TLS context from the configured PEM files; a clear error when they are unusable. */
function loadTls(config: NbdTlsConfig): NbdTlsOptions {
  const read = (file: string, what: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new StorageError('INVALID_ARGUMENT', `cannot read the NBD TLS ${what} ${file}: ${(err as Error).message}`, { cause: err });
    }
  };
  const cert = read(config.certPath, 'certificate');
  const key = read(config.keyPath, 'key');
  try {
    return { secureContext: createSecureContext({ cert, key }), required: config.mode === 'require' };
  } catch (err) {
    throw new StorageError('INVALID_ARGUMENT', `the NBD TLS certificate ${config.certPath} and key ${config.keyPath} are not a usable PEM pair: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * What the REST API needs of the daemon's exports, declared here by the API (its consumer) and
 * implemented by src/daemon/exports.ts: the API layer never imports the daemon.
 */

/** The kinds of export (the catalog's ExportRecord types). */
export type ExportType = 'nbd' | 'vhost-user';

/** What a client of the API sees of an export. */
export interface ExportInfo {
  id: string;
  type: ExportType;
  pool: string;
  volume: string;
  snapshot: string | undefined;
  readOnly: boolean;
  /** NBD export name ('' for the default export, what clients that name none get). */
  name: string | undefined;
  /** NBD URIs a client can use (qemu-img, nbdinfo, nbdcopy): TCP and unix socket. */
  uris: string[];
  /** vhost-user socket path. */
  socketPath: string | undefined;
  queueCount: number | undefined;
  createdAt: string;
  /** Who uses it now: NBD connections that selected this export; vhost-user 1 while a front-end is connected, else 0. */
  clients: number;
  /** vhost-user: when the connected front-end connected (ISO 8601); null when none is, and for NBD. */
  connectedSince: string | null;
  /** vhost-user: what a write the pool has no room for does ('wait' or 'error'); null for NBD. */
  onNoSpace: NoSpacePolicy | null;
  /** Guest requests waiting for space now (the pool is full, policy 'wait'); 0 for NBD. */
  waitingForSpace: number;
}

/**
 * What a vhost-user guest's write that the pool has no room for does: 'wait' holds it until space
 * is freed (the guest sees a slow disk, as QEMU's werror=enospc pauses the VM), 'error' answers
 * IOERR at once.
 */
export type NoSpacePolicy = 'wait' | 'error';

/** One export's activity, for /metrics. */
export interface ExportStats {
  id: string;
  type: ExportType;
  /** pool/volume or pool/volume@snapshot. */
  target: string;
  clients: number;
  /** Requests the device failed since the export started (the client got an error). */
  deviceErrors: number;
  /** Requests waiting for space now. */
  waitingForSpace: number;
}

export interface NbdExportRequest {
  type: 'nbd';
  pool: string;
  volume: string;
  snapshot?: string;
  readOnly?: boolean;
  /**
   * Default: "pool/volume" or "pool/volume@snapshot". '' makes it the default export: the one
   * clients get when they name none (nbd://host:port, qemu-nbd's and nbdkit's default).
   */
  name?: string;
}

export interface VhostUserExportRequest {
  type: 'vhost-user';
  pool: string;
  volume: string;
  /** A snapshot instead of the volume's head: always read-only. */
  snapshot?: string;
  socketPath: string;
  queueCount?: number;
  readOnly?: boolean;
  /** Default: the daemon's (vhostOnNoSpace). */
  onNoSpace?: NoSpacePolicy;
}

export type ExportRequest = NbdExportRequest | VhostUserExportRequest;

/** What the REST API uses of the export manager. */
export interface ExportService {
  list(): ExportInfo[];
  info(id: string): ExportInfo;
  create(request: ExportRequest): Promise<ExportInfo>;
  remove(id: string): Promise<void>;
  /** Where NBD listens (null: off). */
  nbdAddresses(): { listen: string | null; socket: string | null };
  /** NBD connections and idle polling, for /metrics. */
  nbdStats(): NbdStats;
  /** vhost-user ring polling, for /metrics. */
  vhostStats(): VhostStats;
  /** Each export's clients and device errors, for /metrics. */
  exportStats(): ExportStats[];
  /** Space may have been freed in a pool: vhost-user guests' writes waiting for it try again now. */
  spaceMayBeFree?(pool: string): void;
}

export interface VhostStats {
  /** Polls of a drained vhost-user ring (--vhost-poll-us), and those that caught the guest's next request. */
  ringPolls: number;
  ringPollHits: number;
}

export interface NbdStats {
  connections: number;
  /** Idle periods in which a connection polled its socket, and those in which the poll caught a request. */
  idlePolls: number;
  idlePollHits: number;
}

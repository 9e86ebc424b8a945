/**
 * VhostUserBlkExport: a BlockDevice served as a vhost-user-blk back-end on a unix socket (the Export
 * interface of src/core/export.ts).
 *
 * The export listens; a front-end (QEMU's vhost-user-blk-pci with `-chardev socket,path=...`,
 * cloud-hypervisor) connects and gets a VhostUserBlkBackend. One front-end at a time: a device has
 * one driver, so a second connection is closed with a log line (one that arrives while the first is
 * already going away waits for it instead, in a single waiting slot that a connection which has
 * hung up meanwhile gives up to the next one). When the front-end goes away the
 * export keeps listening, so a front-end that redials (QEMU `reconnect=1`) picks up where it left
 * off; a new connection is accepted only once the previous one has released everything (its
 * requests in flight finished, guest memory unmapped).
 *
 * A device that grows while exported (BlockDevice.onResize) is announced to the connected
 * front-end (VhostUserBlkBackend.configChanged); a front-end connecting later reads the new size.
 *
 * requestShutdown(): stop listening and remove the socket file, let requests in flight complete
 * and reach the guest, close the connection; `closed` resolves after that.
 */
import type { BlockDevice } from '../../core/block-device.js';
import { StorageError, type ErrorFix, type StorageErrorCode } from '../../core/errors.js';
import type { Export } from '../../core/export.js';
import { SysError } from '../../sys/libc.js';
import type { ExportLog } from '../log.js';
import { UnixListener, type UnixStream } from '../../sys/unix-socket.js';
import { MAX_QUEUES, VhostUserBlkBackend } from './backend.js';
import type { RingPollOptions } from './rings.js';
import { VIRTIO_BLK_ID_BYTES } from './blk.js';
import { NO_SPACE_POLICIES, type NoSpacePolicy } from './space-wait.js';

export interface VhostUserBlkExportOptions {
  socketPath: string;
  /** Virtqueues (1..16); the front-end may use fewer. */
  queueCount: number;
  readOnly: boolean;
  /** virtio-blk serial (GET_ID), at most 20 bytes of UTF-8. */
  serial: string;
  /** Default: `vhost-user-blk:<socketPath>`. */
  name?: string;
  /** One line per connection event or protocol problem, at its level. */
  logger?: ExportLog;
  /** Log every vhost-user message received (interop debugging; noisy). */
  trace?: boolean;
  /** Polling of drained rings before the guest is asked to kick (RingPollOptions; default: none). */
  poll?: RingPollOptions;
  /**
   * A write refused because the pool is full: 'wait' (default) holds it until space is freed
   * (space-wait.ts), 'error' answers the guest IOERR at once.
   */
  noSpace?: NoSpacePolicy;
  /** What is exported, for log lines that must name it ('pool/volume'). */
  target?: string;
}

export interface VhostUserBlkExportStats {
  connected: boolean;
  /** When the front-end being served connected (Date.now() milliseconds); undefined when none is. */
  connectedSinceMs: number | undefined;
  /** Requests the device failed (the guest got IOERR) since start(), over all connections. */
  deviceErrors: number;
  /** Requests received from guests since start(), over all connections. */
  requests: number;
  /** Polls of drained rings (RingPollOptions), and those that caught the guest's next request, over all connections. */
  ringPolls: number;
  ringPollHits: number;
  /** Guest requests waiting for space now (the pool is full; policy 'wait'). */
  waitingForSpace: number;
}

/**
 * Why the socket path cannot be listened on. A missing or unwritable folder is a path the client
 * chose that cannot be used (INVALID_ARGUMENT), not NOT_FOUND: that would say the volume is missing.
 */
const ERRNO_TO_CODE: Record<string, StorageErrorCode> = {
  EADDRINUSE: 'BUSY',
  EEXIST: 'ALREADY_EXISTS',
  ENOENT: 'INVALID_ARGUMENT',
  ENOTDIR: 'INVALID_ARGUMENT',
  EACCES: 'INVALID_ARGUMENT',
  EPERM: 'INVALID_ARGUMENT',
  EINVAL: 'INVALID_ARGUMENT',
  EROFS: 'INVALID_ARGUMENT',
};

/**
 * What to do about a path in use. Not the edges' generic "delete the existing one": a live socket
 * may be another VM's disk, and a file that is not a socket is somebody's data.
 */
const LISTEN_FIXES: Record<string, ErrorFix> = {
  EADDRINUSE: { literal: true, text: 'choose another socket path, or stop the process that listens on this one (do not delete a live socket: a VM may be using it)' },
  EEXIST: { literal: true, text: 'choose another socket path (the file there is not a socket and is left alone)' },
};

export class VhostUserBlkExport implements Export {
  readonly name: string;
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private readonly opts: VhostUserBlkExportOptions;
  private readonly log: ExportLog;
  private state: 'new' | 'started' | 'stopping' = 'new';
  private listener: UnixListener | undefined;
  private device: BlockDevice | undefined;
  private stopResizeListener: (() => void) | undefined;
  private backend: VhostUserBlkBackend | undefined;
  /** A front-end that connected while the previous connection was still being released. */
  private waiting: UnixStream | undefined;
  private finishedRequests = 0;
  private finishedDeviceErrors = 0;
  /** When the backend being served connected (Date.now() milliseconds). */
  private backendSinceMs = 0;
  private finishedPolls = { polls: 0, hits: 0 };

  constructor(opts: VhostUserBlkExportOptions) {
    if (!Number.isInteger(opts.queueCount) || opts.queueCount < 1 || opts.queueCount > MAX_QUEUES) {
      throw new StorageError('INVALID_ARGUMENT', `vhost-user-blk: queue count ${opts.queueCount} is not in 1..${MAX_QUEUES}`);
    }
    if (Buffer.byteLength(opts.serial, 'utf8') > VIRTIO_BLK_ID_BYTES) {
      throw new StorageError('INVALID_ARGUMENT', `vhost-user-blk: serial "${opts.serial}" is longer than ${VIRTIO_BLK_ID_BYTES} bytes`);
    }
    if (opts.socketPath === '') throw new StorageError('INVALID_ARGUMENT', 'vhost-user-blk: empty socket path');
    // A window that is not a number would never end (every comparison with NaN is false).
    if (opts.poll !== undefined && !(Number.isFinite(opts.poll.windowUs) && opts.poll.windowUs >= 0)) {
      throw new StorageError('INVALID_ARGUMENT', `vhost-user-blk: ring poll window ${opts.poll.windowUs} us is not a number of microseconds >= 0`);
    }
    if (opts.noSpace !== undefined && !NO_SPACE_POLICIES.includes(opts.noSpace)) {
      throw new StorageError('INVALID_ARGUMENT', `vhost-user-blk: on-no-space policy '${String(opts.noSpace)}' is not one of ${NO_SPACE_POLICIES.join(', ')}`);
    }
    this.opts = opts;
    this.name = opts.name ?? `vhost-user-blk:${opts.socketPath}`;
    const logger = opts.logger ?? (() => {});
    this.log = (line, level) => logger(`vhost-user-blk ${opts.socketPath}: ${line}`, level);
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  async start(device: BlockDevice): Promise<void> {
    if (this.state !== 'new') throw new StorageError('INVALID_ARGUMENT', `${this.name} was already started`);
    if (!this.opts.readOnly && device.capabilities.readOnly) {
      throw new StorageError('READ_ONLY', `${this.name}: the device is read-only; export it with readOnly`);
    }
    try {
      this.listener = UnixListener.listen(this.opts.socketPath);
    } catch (err) {
      if (err instanceof SysError) {
        const fix = LISTEN_FIXES[err.code];
        throw new StorageError(ERRNO_TO_CODE[err.code] ?? 'IO_ERROR', `${this.name}: cannot listen: ${err.message}`, { cause: err, ...(fix !== undefined ? { fix } : {}) });
      }
      throw err;
    }
    this.device = device;
    this.stopResizeListener = device.onResize?.((sizeBytes) => {
      this.log(`the device's size changed to ${sizeBytes} bytes`, 'info');
      this.backend?.configChanged();
    });
    this.state = 'started';
    this.listener.onConnection((sock) => this.accept(sock));
    this.log(`listening (${this.opts.queueCount} queue(s), ${this.opts.readOnly ? 'read-only' : 'read-write'})`, 'info');
  }

  requestShutdown(): void {
    if (this.state === 'stopping') return;
    const wasStarted = this.state === 'started';
    this.state = 'stopping';
    this.stopResizeListener?.();
    this.stopResizeListener = undefined;
    this.listener?.close();
    this.listener = undefined;
    this.waiting?.close();
    this.waiting = undefined;
    if (!wasStarted || this.backend === undefined) {
      this.resolveClosed();
      return;
    }
    this.backend.shutdown();
  }

  stats(): VhostUserBlkExportStats {
    const b = this.backend;
    const connected = b !== undefined && !b.isClosing;
    return {
      connected,
      connectedSinceMs: connected ? this.backendSinceMs : undefined,
      deviceErrors: this.finishedDeviceErrors + (b?.deviceErrors ?? 0),
      requests: this.finishedRequests + (b?.requests ?? 0),
      ringPolls: this.finishedPolls.polls + (b?.ringPolls.polls ?? 0),
      ringPollHits: this.finishedPolls.hits + (b?.ringPolls.hits ?? 0),
      waitingForSpace: b?.waitingForSpace ?? 0,
    };
  }

  /** Space may have been freed (a volume or snapshot deleted, a GC): requests waiting for it run again now. */
  retryWaitingForSpace(): void {
    this.backend?.retryWaitingForSpace();
  }

  private accept(sock: UnixStream): void {
    const device = this.device;
    if (this.state !== 'started' || device === undefined) {
      sock.close();
      return;
    }
    // Connected and gone already (a burst of probes, a front-end that gave up): nobody to serve.
    if (sock.peerHungUp()) {
      this.log('a front-end hung up before it was served', 'debug');
      sock.close();
      return;
    }
    const current = this.backend;
    if (current !== undefined) {
      // A front-end that redials at once may arrive before the event loop reported its old socket's
      // hang-up: look now. If the old connection is going away, the new one waits (one slot) until it
      // has released guest memory and descriptors. A waiting one that has hung up meanwhile gives
      // the slot up: it must not keep out a front-end that is still there.
      current.pollSocket();
      if (current.isClosing && (this.waiting === undefined || this.waiting.peerHungUp())) {
        this.waiting?.close();
        this.waiting = sock;
        this.log('a front-end waits for the previous connection to be released', 'debug');
        return;
      }
      this.log('refused a second front-end connection (one is being served)', 'warn');
      sock.close();
      return;
    }
    this.serve(sock, device);
  }

  private serve(sock: UnixStream, device: BlockDevice): void {
    this.log('front-end connected', 'info');
    let backend: VhostUserBlkBackend;
    try {
      backend = new VhostUserBlkBackend(sock, {
        device,
        queueCount: this.opts.queueCount,
        readOnly: this.opts.readOnly,
        serial: this.opts.serial,
        log: this.log,
        trace: this.opts.trace === true,
        ...(this.opts.poll === undefined ? {} : { poll: this.opts.poll }),
        ...(this.opts.noSpace === undefined ? {} : { noSpace: this.opts.noSpace }),
        ...(this.opts.target === undefined ? {} : { subject: `volume '${this.opts.target}'`, pool: this.opts.target.split('/')[0]! }),
      });
    } catch (err) {
      this.log(`cannot serve the connection: ${err instanceof Error ? err.message : String(err)}`, 'warn');
      sock.close();
      return;
    }
    this.backend = backend;
    this.backendSinceMs = Date.now();
    void backend.closed.then(() => {
      this.finishedRequests += backend.requests;
      this.finishedDeviceErrors += backend.deviceErrors;
      this.finishedPolls.polls += backend.ringPolls.polls;
      this.finishedPolls.hits += backend.ringPolls.hits;
      this.backend = undefined;
      const next = this.waiting;
      this.waiting = undefined;
      if (this.state === 'stopping') {
        next?.close();
        this.resolveClosed();
      } else if (next !== undefined) {
        this.accept(next);
      }
    });
  }
}

/**
 * NbdExport: one named export on a shared NbdServer, behind the Export interface (src/core/export.ts)
 * the daemon uses for every kind of export. start() publishes the device under the name;
 * requestShutdown() withdraws it, lets in-flight requests on its connections finish and closes them;
 * `closed` resolves when none remain (the device may then be closed by its owner).
 */
import type { BlockDevice } from '../../core/block-device.js';
import type { Export } from '../../core/export.js';
import type { NbdExportEntry, NbdServer } from './server.js';

export interface NbdExportOptions {
  readOnly?: boolean;
  description?: string;
}

/** What an NBD export's users see of it now (REST, CLI, /metrics). */
export interface NbdExportStats {
  /** Connections using the export now. */
  clients: number;
  /** Requests the device failed since start(), over all connections. */
  deviceErrors: number;
}

export class NbdExport implements Export {
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private state: 'new' | 'started' | 'stopping' = 'new';
  private entry: NbdExportEntry | undefined;
  private deviceErrors = 0;

  constructor(
    private readonly server: NbdServer,
    readonly name: string,
    private readonly options: NbdExportOptions = {},
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  async start(device: BlockDevice): Promise<void> {
    if (this.state !== 'new') throw new Error(`NBD export "${this.name}" was already started`);
    const entry: NbdExportEntry = {
      device,
      readOnly: this.options.readOnly === true,
      ...(this.options.description !== undefined ? { description: this.options.description } : {}),
      onDeviceError: () => this.deviceErrors++,
    };
    this.server.addExport(this.name, entry);
    this.entry = entry;
    this.state = 'started';
  }

  stats(): NbdExportStats {
    return { clients: this.entry === undefined ? 0 : this.server.clientsOf(this.entry), deviceErrors: this.deviceErrors };
  }

  requestShutdown(): void {
    if (this.state === 'stopping') return;
    const wasStarted = this.state === 'started';
    this.state = 'stopping';
    if (!wasStarted) {
      this.resolveClosed();
      return;
    }
    void this.server.removeExport(this.name).then(() => this.resolveClosed());
  }
}

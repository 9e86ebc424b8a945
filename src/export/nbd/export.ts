/**
 * NbdExport: one named export on a shared NbdServer, behind the Export interface (src/core/export.ts)
 * the daemon uses for every kind of export. start() publishes the device under the name;
 * requestShutdown() withdraws it, lets in-flight requests on its connections finish and closes them;
 * `closed` resolves when none remain (the device may then be closed by its owner).
 */
import type { BlockDevice } from '../../core/block-device.js';
import type { Export } from '../../core/export.js';
import type { NbdServer } from './server.js';

export interface NbdExportOptions {
  readOnly?: boolean;
  description?: string;
}

export class NbdExport implements Export {
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private state: 'new' | 'started' | 'stopping' = 'new';

  constructor(
    private readonly server: NbdServer,
    readonly name: string,
    private readonly options: NbdExportOptions = {},
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  async start(device: BlockDevice): Promise<void> {
    if (this.state !== 'new') throw new Error(`NBD export "${this.name}" was already started`);
    this.server.addExport(this.name, {
      device,
      readOnly: this.options.readOnly === true,
      ...(this.options.description !== undefined ? { description: this.options.description } : {}),
    });
    this.state = 'started';
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

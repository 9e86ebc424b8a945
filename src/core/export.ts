import type { BlockDevice } from './block-device.js';

/** Export: serves a BlockDevice to clients (NBD server, vhost-user-blk backend). */
export interface Export {
  readonly name: string;
  start(device: BlockDevice): Promise<void>;
  /** Stops accepting new requests; in-flight ones complete. */
  requestShutdown(): void;
  readonly closed: Promise<void>;
}

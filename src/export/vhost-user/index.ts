/** vhost-user-blk export: serve a BlockDevice to QEMU / cloud-hypervisor over a unix socket. */
export { VhostUserBlkExport, type VhostUserBlkExportOptions, type VhostUserBlkExportStats } from './export.js';
export { VhostUserBlkBackend, type VhostUserBlkBackendOptions, PROTOCOL_FEATURES_OFFERED, MAX_QUEUES } from './backend.js';
export { QUEUE_BATCH } from './rings.js';
export * as messages from './messages.js';

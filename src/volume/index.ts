/** src/volume: the block layer's management side: pools, volumes, snapshots, clones, jobs. */
export { LocalVolumeService, DEFAULT_MAX_CHAIN_DEPTH, DEFAULT_TRASH_EXPIRY_MS, resizeImage } from './service.js';
export type { ChainDepthPolicy, LocalVolumeServiceOptions, RecoveryReport } from './service.js';
export { JobRunner, type JobContext } from './jobs.js';
export { openChain, LAYER_FILE_PATTERN, TEMP_PREFIX } from './layers.js';
export { DIFF_FORMAT, DIFF_VERSION } from './diff-stream.js';
export type * from './types.js';
export { VolumeCatalog, VOLUME_CATALOG_SCHEMA_VERSION } from './catalog.js';
export { migrateLegacyCatalog } from './catalog-migration.js';
export type * from './records.js';

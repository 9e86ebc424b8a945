/** src/catalog: Strata's metadata (pools, volumes, layers, snapshots, jobs, intents) in LevelDB. */
export { Catalog, CATALOG_SCHEMA_VERSION, delOp, putOp, recordKey, type CatalogOp, type CatalogWriteOptions } from './catalog.js';
export type * from './records.js';

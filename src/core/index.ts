export * from './errors.js';
export * from './units.js';
export type * from './host-file.js';
export type * from './block-device.js';
export type * from './image.js';
export type * from './chunk-store.js';
export type * from './export.js';

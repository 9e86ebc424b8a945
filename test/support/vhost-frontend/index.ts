/** The TypeScript vhost-user-blk front-end (QEMU's role without a VM), for tests and bench/. */
export * from './wire.js';
export * from './options.js';
export * from './guest-memory.js';
export * from './driver-queue.js';
export * from './frontend.js';

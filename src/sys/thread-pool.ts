/**
 * The size of libuv's thread pool, where LocalHostFile's asynchronous preads and pwrites run (every
 * request on a disk; requests over 256 KiB on tmpfs). libuv reads UV_THREADPOOL_SIZE once, when the
 * pool starts (the process's first asynchronous fs, dns, crypto or zlib call), so this must run
 * before that: local-file.ts calls it when it loads. A value set by the user wins.
 *
 * Why 32 and not libuv's 4: a pool thread holds one request for the whole system call, so the pool
 * size is the most host I/Os in flight. 32 is the queue depth the exports and `strata img bench`
 * run at: every request in flight gets its thread, as in qemu's pool (up to 64 threads), a disk
 * sees the guest's queue depth, and on a busy machine the copies get the CPU share qemu's do (the
 * scheduler shares CPU between threads: with 8 threads and others' load, 1 MiB reads at QD 32 on
 * tmpfs ran at 0.6-0.7x of qemu-img; with 32, even). The cost: idle threads woken per request,
 * about 10% more CPU per 1 MiB read than with 8 (measured in bench/RESULTS.md, issue 13).
 */
export const HOST_IO_THREADS = 32;

export function sizeThreadPool(): void {
  process.env['UV_THREADPOOL_SIZE'] ??= String(HOST_IO_THREADS);
}

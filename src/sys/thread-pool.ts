/**
 * The size of libuv's thread pool, where LocalHostFile's asynchronous preads and pwrites run (every
 * request on a disk; requests over 256 KiB on tmpfs). libuv reads UV_THREADPOOL_SIZE once, when the
 * pool starts (the process's first asynchronous fs, dns, crypto or zlib call), so this must run
 * before that: local-file.ts calls it when it loads. A value set by the user wins.
 *
 * Why 16 and not libuv's 4: a pool thread holds one request for its whole system call, so the pool
 * size is the most host I/Os in flight (a disk sees at most this queue depth), and the scheduler
 * shares CPU between threads, so on a busy machine few copying threads get little of it (1 MiB
 * reads at QD 32 on tmpfs under others' load 20: 8 threads ran at 0.6-0.7x of qemu-img, whose pool
 * grows to 32 threads; 32 threads about even). On a quiet machine 4, 8 and 16 threads run level
 * with qemu-img and 32 about 5% behind (each request wakes an idle thread: 2.5 context switches
 * per 1 MiB read against 0.9 with 8). 16 is the middle (bench/RESULTS.md, issue 13).
 */
export const HOST_IO_THREADS = 16;

export function sizeThreadPool(): void {
  process.env['UV_THREADPOOL_SIZE'] ??= String(HOST_IO_THREADS);
}

/**
 * The size of libuv's thread pool, where LocalHostFile's asynchronous preads and pwrites run (every
 * request on a disk; requests over 256 KiB on tmpfs). libuv reads UV_THREADPOOL_SIZE once, when the
 * pool starts (the process's first asynchronous fs, dns, crypto or zlib call), so this must run
 * before that: local-file.ts calls it when it loads. A value set by the user wins.
 *
 * Why 32 and not libuv's 4: a pool thread holds one request for its whole system call, so the pool
 * size is the most host I/Os in flight (a disk sees at most this queue depth), and the scheduler
 * shares CPU between threads, so on a busy machine few threads get little of it. On tmpfs the pool
 * now carries only writes that grow the file (reads and overwrites over 256 KiB take io_uring,
 * src/sys/io-uring.ts): those serialize on the file's inode lock (perf: about 30% of both
 * Strata's and qemu-img's CPU is the waiters spinning on it), so they go as fast as the chain of
 * lock holders gets CPU; src/store/growing-writes.ts now sends them one at a time, combined, and
 * up to 16 at once only while other processes take the CPUs. The figures below are from before. With two CPU-bound processes beside it, 1 MiB allocating writes at QD 32
 * ran at a median 655 and 569 ops/s with 16 threads against 1114 and 732 with 32 (qemu-img, whose
 * pool has a thread per request at QD 32: 754 and 520); on a quieter machine 16 and 32 ran level
 * (1675 / 1670 ops/s, CPU 1.53 / 1.61 s per 3 GiB). Before io_uring took the reads, 32 threads had
 * cost 1 MiB reads on a quiet machine about 5% (each request woke an idle thread); 8 had run them
 * at 0.6-0.7x of qemu-img under others' load (bench/RESULTS.md, issue 13).
 */
export const HOST_IO_THREADS = 32;

export function sizeThreadPool(): void {
  process.env['UV_THREADPOOL_SIZE'] ??= String(HOST_IO_THREADS);
}

/**
 * The daemon's V8 heap growth. The daemon keeps a small JavaScript heap (~30 MB live) and moves
 * a lot of short-lived memory through it (a socket read buffer per 64 KiB of every request body,
 * the request's objects). V8 sets the old generation's next limit from the live size with a
 * factor it derives from recent GC speed; for this heap the limit ended up within one new space
 * of the live size, and V8 then starts an incremental full GC whenever the space left is smaller
 * than the new space: on a PUT-heavy S3 load one every ~10 requests (8-9 full GCs per 100 1 MiB
 * PUTs, ~3-4 ms of CPU per PUT of ~12).
 *
 * The fix: a fixed growth factor of DAEMON_HEAP_GROWING_PERCENT (x4, the largest factor V8's own
 * heuristic ever picks), set once at the daemon's start. The heap then grows to about four times
 * what lives before the next full GC (measured: 1 full GC per 300 PUTs instead of 32, ~10 MB more
 * peak RSS). Only `strata serve` applies it; CLI commands keep V8's default.
 *
 * External memory (ArrayBuffer backing stores: socket reads, chunk and pack buffers) starts a full
 * GC on its own schedule too: V8 by default starts one whenever external memory has grown 64 MiB
 * past its level at the last GC, whatever the heap's limit. At 300 MiB/s of request bodies that is
 * ~6 full GCs a second (16 concurrent 256 MiB PUTs: 113 mark-compacts, every one started for
 * "external memory pressure" per --trace-incremental-marking, V8's helper threads ~16% of both
 * cores). EXTERNAL_MEMORY_IN_GLOBAL_LIMIT_FLAG counts external memory in the global limit, which
 * grows with the factor above: the same load then ran 6-7 full GCs, 20% less daemon CPU and 20%
 * more throughput (bench/RESULTS.md). The cost is memory: garbage buffers wait for the larger
 * limit, so that load peaked at 2.0-2.3 GB of RSS instead of 1.1 GB (1 MiB PUTs: 180 MB either
 * way). A growth factor of x2 with this flag peaked at 1.5 GB but ran 9-11 full GCs per 300 1 MiB
 * PUTs instead of 2, which is what the factor above is for.
 */
import v8 from 'node:v8';

/** heap growing factor = 1 + this / 100 (V8's --heap-growing-percent). */
export const DAEMON_HEAP_GROWING_PERCENT = 300;

/** The V8 flag that sets it (read by V8 at every limit recomputation, so it can be set at run time). */
export const HEAP_GROWING_FLAG = '--heap-growing-percent';

/** The V8 flag that counts external memory in the global limit (settable at run time as well). */
export const EXTERNAL_MEMORY_IN_GLOBAL_LIMIT_FLAG = '--external-memory-accounted-in-global-limit';

/** Applies the daemon's heap growth to this process (call once, at the daemon's start). */
export function tuneDaemonHeapGrowth(): void {
  v8.setFlagsFromString(`${HEAP_GROWING_FLAG}=${DAEMON_HEAP_GROWING_PERCENT}`);
  v8.setFlagsFromString(EXTERNAL_MEMORY_IN_GLOBAL_LIMIT_FLAG);
}

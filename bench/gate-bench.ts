/**
 * What the shared RequestGate (src/core/request-gate.ts) costs per request on the data path (issue
 * 11): NBD connections, vhost-user rings and the live volume enter and leave it once per request,
 * where each kept a bare in-flight counter before. Times, per run, N enter+leave pairs on an open
 * gate against N increments and decrements of a plain counter field, and prints every run (ns per
 * pair) and the medians. A request costs 7-50 us at the rates the NBD and vhost-user benches reach,
 * so the difference is what to compare against that.
 *
 *   npm run build && node dist/bench/gate-bench.js [--runs 7] [--millions 50]
 */
import { RequestGate } from '../src/core/request-gate.js';
import { argValue, exitOnHelp, median } from './args.js';

/** The shape the three users had before: a counter field on an object. */
class BareCounter {
  inFlight = 0;
  enter(): void {
    this.inFlight++;
  }
  leave(): void {
    this.inFlight--;
  }
}

function timePairs(iterations: number, enter: () => unknown, leave: () => void): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) {
    enter();
    leave();
  }
  return Number(process.hrtime.bigint() - start) / iterations;
}

exitOnHelp(import.meta.url);
const runs = Number(argValue('--runs', '7'));
const iterations = Number(argValue('--millions', '50')) * 1_000_000;
const counter = new BareCounter();
const gate = new RequestGate();
const cells: Record<string, number[]> = { 'bare counter': [], 'gate tryEnter+leave': [], 'gate enter+leave': [] };
for (let run = 1; run <= runs; run++) {
  // Alternate the order per run so neither side always runs on a warmer or a busier moment.
  const order = run % 2 === 0 ? Object.keys(cells).reverse() : Object.keys(cells);
  for (const name of order) {
    const nsPerPair =
      name === 'bare counter'
        ? timePairs(iterations, () => counter.enter(), () => counter.leave())
        : name === 'gate tryEnter+leave'
          ? timePairs(iterations, () => gate.tryEnter(), () => gate.leave())
          : timePairs(iterations, () => gate.enter(), () => gate.leave());
    cells[name]!.push(nsPerPair);
    console.log(`run ${run}: ${name}: ${nsPerPair.toFixed(2)} ns per pair`);
  }
}
if (counter.inFlight !== 0) throw new Error('assertion failed: the counter did not return to 0');
for (const [name, values] of Object.entries(cells)) console.log(`median ${name}: ${median(values).toFixed(2)} ns per pair (${runs} runs of ${iterations} pairs)`);

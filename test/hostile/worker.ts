/**
 * Worker side of the hostile-input runner (see runner.ts): opens one image from bytes, exercises it
 * as a plan says, and reports what happened. Runs in a worker thread so that the test can end it
 * on a deadline: a hang, even a synchronous loop, cannot stall the test run.
 */
import { parentPort } from 'node:worker_threads';
import { StorageError } from '../../src/core/errors.js';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import type { CaseOutcome, CasePlan, CaseRequest } from './protocol.js';

const MiB = 1024 * 1024;

function memory() {
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers };
}

async function runCase(bytes: Uint8Array, plan: CasePlan, outcome: CaseOutcome): Promise<void> {
  const file = new MemoryHostFile(bytes, { name: 'hostile.qcow2' });
  outcome.step = 'open';
  const image = await Qcow2Image.open(plan.readOnly ? file.readOnlyView() : file, {
    readOnly: plan.readOnly,
    ignoreBacking: true,
    dirtyPolicy: plan.dirtyPolicy,
  });
  try {
    outcome.step = 'info';
    const info = image.info();
    outcome.info = { sizeBytes: image.sizeBytes, corrupt: info.corrupt, dirty: info.dirty, readOnly: image.readOnly, snapshots: info.snapshots.length };
    // Read the guest, in 1 MiB pieces, up to a bound (a hostile size field can claim petabytes).
    outcome.step = 'read';
    const limit = Math.min(image.sizeBytes, plan.readLimitBytes);
    const buf = new Uint8Array(MiB);
    for (let offset = 0; offset < limit; offset += MiB) {
      const piece = buf.subarray(0, Math.min(MiB, limit - offset));
      try {
        await image.read(offset, piece);
      } catch (err) {
        // A StorageError for one piece (a corrupt L2 entry) must not stop the rest being read.
        if (!(err instanceof StorageError)) throw err;
        outcome.readErrors = (outcome.readErrors ?? 0) + 1;
        outcome.firstReadError ??= `${err.code}: ${err.message}`;
      }
    }
    for (const probe of plan.extraReads ?? []) {
      if (probe >= image.sizeBytes) continue;
      try {
        await image.read(probe, buf.subarray(0, Math.min(4096, image.sizeBytes - probe)));
      } catch (err) {
        if (!(err instanceof StorageError)) throw err;
        outcome.readErrors = (outcome.readErrors ?? 0) + 1;
      }
    }
    if (plan.blockStatus) {
      outcome.step = 'blockStatus';
      await image.blockStatus(0, limit);
    }
    if (plan.check) {
      outcome.step = 'check';
      const check = await image.check();
      outcome.check = { corruptions: check.corruptions, leaks: check.leaks, messages: check.messages.length };
    }
    for (const write of plan.writes ?? []) {
      if (write.guestOffset + write.lengthBytes > image.sizeBytes) continue;
      outcome.step = `write ${write.lengthBytes}@${write.guestOffset}`;
      await image.write(write.guestOffset, new Uint8Array(write.lengthBytes).fill(0x5a));
    }
    if (plan.writes?.length) {
      outcome.step = 'flush';
      await image.flush();
    }
  } catch (err) {
    // Close (best effort) without losing which step failed.
    await image.close().catch(() => undefined);
    throw err;
  }
  outcome.step = 'close';
  await image.close();
  outcome.step = 'done';
  if (plan.returnImage) outcome.image = file.snapshotBytes();
}

parentPort!.on('message', (request: CaseRequest) => {
  const outcome: CaseOutcome = { id: request.id, result: 'ok', step: 'start' };
  const before = memory();
  let peak = before;
  const sampler = setInterval(() => {
    const now = memory();
    if (now.rss > peak.rss) peak = { ...peak, rss: now.rss };
    if (now.heapUsed + now.arrayBuffers > peak.heapUsed + peak.arrayBuffers) peak = { ...now, rss: peak.rss };
  }, 5);
  runCase(new Uint8Array(request.bytes), request.plan, outcome)
    .catch((err: unknown) => {
      if (err instanceof StorageError) {
        outcome.result = 'storage-error';
        outcome.code = err.code;
        outcome.message = err.message;
      } else {
        outcome.result = 'crash';
        outcome.message = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
        outcome.stack = err instanceof Error ? err.stack : undefined;
      }
    })
    .finally(() => {
      clearInterval(sampler);
      const after = memory();
      const peakNow = after.heapUsed + after.arrayBuffers > peak.heapUsed + peak.arrayBuffers ? after : peak;
      outcome.memory = {
        heapPlusBuffersGrowthBytes: Math.max(0, peakNow.heapUsed + peakNow.arrayBuffers - before.heapUsed - before.arrayBuffers),
        rssGrowthBytes: Math.max(0, Math.max(peak.rss, after.rss) - before.rss),
      };
      const transfer = outcome.image ? [outcome.image.buffer as ArrayBuffer] : [];
      parentPort!.postMessage(outcome, transfer);
    });
});

/**
 * Runs hostile-image cases in a worker thread with a deadline per case, so that a hang (even a
 * synchronous loop) or a memory blow-up in the engine is reported as a failure instead of stalling
 * or killing the test run.
 *
 * The worker runs the engine's current sources: they are transpiled (types stripped, nothing else)
 * with the repository's TypeScript into a scratch directory under node_modules/.cache, next to the
 * node_modules the engine imports from (koffi). Nothing depends on a prior build.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import ts from 'typescript';
import { REPO_ROOT } from '../support/tools.js';
import type { CaseOutcome, CasePlan, CaseRequest } from './protocol.js';

const SOURCE_DIRS = ['src', 'formats'];
const WORKER_SOURCE = path.join('test', 'hostile', 'worker.ts');

function listTs(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listTs(full));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(full);
  }
  return out;
}

/** Transpiles the engine and the worker into a fresh directory; returns the worker's path. */
export function buildWorker(): { workerPath: string; cleanup: () => void } {
  const outDir = path.join(REPO_ROOT, 'node_modules', '.cache', `strata-hostile-${process.pid}-${Date.now()}`);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(path.join(outDir, 'package.json'), '{"type":"module"}\n');
  const files = [...SOURCE_DIRS.flatMap((d) => listTs(path.join(REPO_ROOT, d))), path.join(REPO_ROOT, WORKER_SOURCE)];
  for (const file of files) {
    const rel = path.relative(REPO_ROOT, file);
    const { outputText } = ts.transpileModule(readFileSync(file, 'utf8'), {
      fileName: rel,
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: false },
    });
    const target = path.join(outDir, rel.replace(/\.ts$/, '.js'));
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, outputText);
  }
  return {
    workerPath: path.join(outDir, WORKER_SOURCE.replace(/\.ts$/, '.js')),
    cleanup: () => rmSync(outDir, { recursive: true, force: true }),
  };
}

export interface RunnerOptions {
  /** Per-case deadline (default 10 s). */
  timeoutMs?: number;
  /** V8 heap limit of the worker (default 512 MiB): a runaway allocation kills the worker, not us. */
  maxHeapMb?: number;
}

export class HostileRunner {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly timeoutMs: number;
  private readonly maxHeapMb: number;

  constructor(
    private readonly workerPath: string,
    options: RunnerOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.maxHeapMb = options.maxHeapMb ?? 512;
  }

  private spawn(): Worker {
    this.worker ??= new Worker(this.workerPath, { resourceLimits: { maxOldGenerationSizeMb: this.maxHeapMb } });
    return this.worker;
  }

  /** Runs one case; never rejects. The bytes are copied (the caller's array stays usable). */
  run(bytes: Uint8Array, plan: CasePlan): Promise<CaseOutcome> {
    const worker = this.spawn();
    const id = this.nextId++;
    const copy = bytes.slice();
    const started = Date.now();
    return new Promise<CaseOutcome>((resolve) => {
      const finish = (outcome: CaseOutcome) => {
        clearTimeout(timer);
        worker.off('message', onMessage);
        worker.off('error', onError);
        worker.off('exit', onExit);
        outcome.elapsedMs = Date.now() - started;
        resolve(outcome);
      };
      const onMessage = (outcome: CaseOutcome) => {
        if (outcome.id === id) finish(outcome);
      };
      const onError = (err: Error) => {
        this.worker = undefined;
        finish({ id, result: 'worker-died', step: '?', message: `${err.name}: ${err.message}`, stack: err.stack });
      };
      const onExit = (code: number) => {
        this.worker = undefined;
        finish({ id, result: 'worker-died', step: '?', message: `worker exited with code ${code}` });
      };
      const timer = setTimeout(() => {
        this.worker = undefined;
        worker.off('exit', onExit);
        void worker.terminate();
        finish({ id, result: 'hang', step: '?', message: `no answer within ${this.timeoutMs} ms` });
      }, this.timeoutMs);
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.on('exit', onExit);
      const request: CaseRequest = { id, bytes: copy.buffer as ArrayBuffer, plan };
      worker.postMessage(request, [copy.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }
}

/** Allowed: success, or a StorageError. Anything else (crash, hang, dead worker) is a bug. */
export function isAllowed(outcome: CaseOutcome): boolean {
  return outcome.result === 'ok' || outcome.result === 'storage-error';
}

export function describeOutcome(outcome: CaseOutcome): string {
  const base = `${outcome.result} in ${outcome.step}${outcome.code ? ` (${outcome.code})` : ''}: ${outcome.message ?? ''}`;
  const frames = outcome.stack?.split('\n').slice(1, 5).map((l) => l.trim()).join(' <- ');
  return frames ? `${base} [${frames}]` : base;
}

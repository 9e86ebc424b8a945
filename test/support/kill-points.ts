/**
 * Killing a child process at a chosen point of an operation (the crash tests of test/volume): the
 * child wraps its real catalog or layer store (`wrapWith`) to stop at a point (`pauseUntilKilled`
 * prints "paused <where>" and never returns), and the parent kills it with SIGKILL on a line it
 * watches for (`killOnLine`).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { spawnTsChild, watchLines } from './ts-child.js';

/** Forwards every call to `target`, with `overrides` in front (methods bound to target). */
export function wrapWith<T extends object>(target: T, overrides: Partial<T>): T {
  return new Proxy(target, {
    get(t, prop) {
      if (prop in overrides) return overrides[prop as keyof T];
      const value: unknown = Reflect.get(t, prop, t);
      return typeof value === 'function' ? value.bind(t) : value;
    },
  });
}

/** Stops here until killed: prints "paused <where>" (the interval keeps the process alive). */
export async function pauseUntilKilled(where: string): Promise<never> {
  process.stdout.write(`paused ${where}\n`);
  setInterval(() => {}, 1 << 30);
  return new Promise<never>(() => {});
}

/**
 * Starts the TypeScript child `script` and SIGKILLs it on the first stdout line for which
 * `killAt` is true (every line is seen by it first); resolves once it has exited.
 */
export async function killOnLine(script: string, args: readonly string[], killAt: (line: string) => boolean): Promise<ChildProcessWithoutNullStreams> {
  const child = spawnTsChild(script, args);
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  await watchLines(child, (line) => {
    const stop = killAt(line);
    if (stop) child.kill('SIGKILL');
    return stop;
  });
  await exited;
  return child;
}

/**
 * Runs `script` (an ES module, as `node -e` text) in a child process, SIGKILLs it once it has
 * printed `line`, and resolves when it is gone. Rejects when it exits by itself before that.
 */
export async function killWhenPrinted(script: string, line: string): Promise<void> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes(line)) resolve();
    });
    child.on('exit', (code) => reject(new Error(`the child exited (${code}) before it printed '${line}'`)));
  });
  child.kill('SIGKILL');
  await exited;
}

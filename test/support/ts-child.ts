/**
 * Runs a TypeScript test script as a child process (for tests that SIGKILL a real process) with
 * no build step: Node strips the types itself (--experimental-transform-types, which also handles
 * constructor parameter properties) and ts-child-hooks.mjs maps the sources' `.js` imports to
 * their `.ts` files.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const HOOKS_URL = pathToFileURL(path.join(import.meta.dirname, 'ts-child-hooks.mjs')).href;
const REGISTER = `data:text/javascript,import { register } from 'node:module'; register(${JSON.stringify(HOOKS_URL)});`;

/** Starts `script` (a .ts path) with `args`; stdin is closed. */
export function spawnTsChild(script: string, args: readonly string[]): ChildProcessWithoutNullStreams {
  const child = spawn(process.execPath, ['--experimental-transform-types', '--no-warnings', '--import', REGISTER, script, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  child.stdin.end();
  return child;
}

/** Resolves with the child's stdout lines as they come; `onLine` returns true to stop listening. */
export function watchLines(child: ChildProcessWithoutNullStreams, onLine: (line: string) => boolean | void): Promise<void> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    let stderr = '';
    let done = false;
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        if (!done && onLine(line) === true) {
          done = true;
          resolve();
        }
      }
    });
    child.on('exit', (code, signal) => {
      if (!done) reject(new Error(`child exited (${code ?? signal}) before the awaited line; stderr: ${stderr.slice(-2000)}`));
    });
  });
}

#!/usr/bin/env node
// The strata command: runs the compiled CLI (`npm run build` writes dist/).
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { nodeVersionProblem } from './node-version.js';

// Refuse an unsupported Node.js before loading anything that might fail on it in a less clear way.
const { engines } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const versionProblem = nodeVersionProblem(process.version, engines.node);
if (versionProblem !== undefined) {
  process.stderr.write(versionProblem);
  process.exit(1);
}

const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write(`strata: the CLI is not built (${fileURLToPath(entry)} is missing): run \`npm run build\`\n`);
  process.exitCode = 1;
} else {
  const { main } = await import(entry.href);
  try {
    const code = await main(process.argv.slice(2));
    process.exitCode = typeof code === 'number' ? code : 0;
  } catch (err) {
    process.stderr.write(`strata: ${err && err.stack ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  }
}

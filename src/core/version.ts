/**
 * Strata's version, read from the package.json above this module (dist/src/core or src/core), so
 * the daemon (status, logs, OpenAPI) and `strata --version` report the same one.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Folders searched upwards for Strata's package.json. */
const PACKAGE_SEARCH_DEPTH = 5;

export function strataVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < PACKAGE_SEARCH_DEPTH; i++) {
    const file = path.join(dir, 'package.json');
    if (existsSync(file)) {
      try {
        const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string; version?: string };
        if (pkg.name === 'strata' && typeof pkg.version === 'string') return pkg.version;
      } catch {
        // keep looking
      }
    }
    dir = path.dirname(dir);
  }
  return '0.0.0';
}

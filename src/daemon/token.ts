/**
 * The API token: 32 random bytes as hex in <data>/token, created at first start with mode 0600.
 * Clients send it as "Authorization: Bearer <token>"; the CLI reads the same file.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { StorageError } from '../core/errors.js';

export const TOKEN_FILE_NAME = 'token';
const TOKEN_PATTERN = /^[A-Za-z0-9._~+/=-]{16,512}$/;

/** Reads the token file, creating it (0600) when it does not exist. */
export function loadOrCreateToken(dataDir: string): { token: string; created: boolean; path: string } {
  const file = path.join(dataDir, TOKEN_FILE_NAME);
  try {
    const token = randomBytes(32).toString('hex');
    fs.writeFileSync(file, `${token}\n`, { flag: 'wx', mode: 0o600 });
    return { token, created: true, path: file };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const text = fs.readFileSync(file, 'utf8').trim();
  if (!TOKEN_PATTERN.test(text)) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `the token file ${file} does not hold a token (16 to 512 characters of [A-Za-z0-9._~+/=-]); delete it to have a new one generated`,
    );
  }
  const mode = fs.statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0) fs.chmodSync(file, 0o600);
  return { token: text, created: false, path: file };
}

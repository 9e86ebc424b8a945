/**
 * Encryption at rest of S3 secret keys: AES-256-GCM under a key kept in the data folder (a file of
 * 32 random bytes, mode 0600, created once). SigV4 needs the secret itself to recompute a
 * signature, so secrets are encrypted, not hashed; the access key id is the associated data, so a
 * sealed secret copied onto another key's record does not open.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { StorageError } from '../../core/errors.js';

const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** The format tag of a sealed value (a later format gets another). */
const SEALED_PREFIX = 'v1:';
const OWNER_ONLY = 0o600;

export class SecretBox {
  private constructor(private readonly key: Buffer) {}

  /**
   * The key in `keyPath`, created (0600, synced) when the file does not exist. A key file that
   * others may read, or of the wrong size, is refused: the secrets it protects are credentials.
   */
  static openOrCreate(keyPath: string): SecretBox {
    try {
      const fd = openSync(keyPath, 'wx', OWNER_ONLY);
      try {
        writeSync(fd, randomBytes(KEY_BYTES));
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new StorageError('IO_ERROR', `cannot create the secret key file ${keyPath}: ${(err as Error).message}`, { cause: err });
      }
    }
    const mode = statSync(keyPath).mode & 0o777;
    if ((mode & 0o077) !== 0) {
      throw new StorageError('INVALID_ARGUMENT', `the secret key file ${keyPath} is readable by others (mode ${mode.toString(8)}); run 'chmod 600 ${keyPath}'`);
    }
    const key = readFileSync(keyPath);
    if (key.length !== KEY_BYTES) {
      throw new StorageError('CORRUPT', `the secret key file ${keyPath} holds ${key.length} bytes, not ${KEY_BYTES}; restore it from a backup (without it the stored S3 secrets cannot be read)`);
    }
    return new SecretBox(key);
  }

  /** For tests: a box over a given key. */
  static withKey(key: Buffer): SecretBox {
    if (key.length !== KEY_BYTES) throw new Error(`assertion failed: a secret box key is ${KEY_BYTES} bytes`);
    return new SecretBox(Buffer.from(key));
  }

  seal(plaintext: string, associatedData: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(associatedData, 'utf8'));
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return SEALED_PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
  }

  /** The plaintext; CORRUPT when the value was not sealed by this key for this associated data. */
  open(sealed: string, associatedData: string): string {
    if (!sealed.startsWith(SEALED_PREFIX)) throw new StorageError('CORRUPT', `a stored secret has an unknown format '${sealed.slice(0, 8)}'`);
    const raw = Buffer.from(sealed.slice(SEALED_PREFIX.length), 'base64');
    if (raw.length < IV_BYTES + TAG_BYTES) throw new StorageError('CORRUPT', 'a stored secret is truncated');
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(associatedData, 'utf8'));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    try {
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch (err) {
      throw new StorageError('CORRUPT', `the secret of access key ${associatedData} does not decrypt with this data folder's key file (was the key file replaced?)`, { cause: err });
    }
  }
}

/**
 * S3 users and their access keys, as tables over the CatalogStore: `s3-user/<name>` and
 * `s3-key/<access key id>` (with a unique index `s3-key.owner/<user>/<id>` listing a user's keys).
 * A key's secret is stored sealed (SecretBox: AES-256-GCM under the data folder's key file) and
 * returned once, when the key is created; `secretFor` opens it for SigV4.
 */
import { randomBytes, randomInt } from 'node:crypto';
import type { CatalogStore, CatalogValue } from '../../core/catalog-store.js';
import { StorageError } from '../../core/errors.js';
import { Table, TxnBuilder, type TableSchema, type Versioned } from '../../meta/table.js';
import type { SecretBox } from './secret-box.js';
import { BUCKET_SCHEMA, KEY_END } from '../tables.js';
import type { BucketRecord } from '../records.js';

export interface UserRecord {
  readonly name: string;
  readonly createdAt: string;
}

export type AccessKeyStatus = 'active' | 'inactive';

export interface AccessKeyRecord {
  readonly id: string;
  readonly owner: string;
  readonly createdAt: string;
  readonly status: AccessKeyStatus;
  /** The secret, sealed with the access key id as associated data. */
  readonly sealedSecret: string;
}

/** A key as shown to operators: everything but the secret. */
export type AccessKeyInfo = Omit<AccessKeyRecord, 'sealedSecret'>;

/** User names: the REST API's names (letters, digits, '.', '_', '-'; 1 to 128). */
export const USER_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** AWS-shaped access key ids: a prefix and 16 characters of upper-case base32. */
const ACCESS_KEY_PREFIX = 'STRA';
const ACCESS_KEY_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const ACCESS_KEY_RANDOM_CHARS = 16;
/** 40 characters, like AWS secrets (30 random bytes in base64url). */
const SECRET_RANDOM_BYTES = 30;
/** Keys a user may hold (AWS allows two; a few more for rotation). */
export const MAX_KEYS_PER_USER = 10;
/** How many of a user's buckets a refused user delete names. */
const OWNED_BUCKETS_NAMED = 5;

function object(value: CatalogValue): Record<string, CatalogValue> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not an object');
  return value;
}

function text(o: Record<string, CatalogValue>, name: string): string {
  const v = o[name];
  if (typeof v !== 'string') throw new Error(`'${name}' is not a string`);
  return v;
}

const userSchema: TableSchema<UserRecord> = {
  name: 's3-user',
  id: (u) => u.name,
  parse: (value) => {
    const o = object(value);
    return { name: text(o, 'name'), createdAt: text(o, 'createdAt') };
  },
};

const keySchema: TableSchema<AccessKeyRecord> = {
  name: 's3-key',
  id: (k) => k.id,
  parse: (value) => {
    const o = object(value);
    const status = text(o, 'status');
    if (status !== 'active' && status !== 'inactive') throw new Error(`status '${status}'`);
    return { id: text(o, 'id'), owner: text(o, 'owner'), createdAt: text(o, 'createdAt'), status, sealedSecret: text(o, 'sealedSecret') };
  },
  indexes: { owner: (k) => `${k.owner}/${k.id}` },
};

function newAccessKeyId(): string {
  let id = ACCESS_KEY_PREFIX;
  for (let i = 0; i < ACCESS_KEY_RANDOM_CHARS; i++) id += ACCESS_KEY_CHARS[randomInt(ACCESS_KEY_CHARS.length)];
  return id;
}

export function keyInfo(record: AccessKeyRecord): AccessKeyInfo {
  return { id: record.id, owner: record.owner, createdAt: record.createdAt, status: record.status };
}

/** Opened secrets kept for SigV4 (a key is a few dozen bytes; more keys than this are looked up again). */
export const SECRET_CACHE_ENTRIES_MAX = 1024;

export class UserStore {
  private readonly users: Table<UserRecord>;
  private readonly keys: Table<AccessKeyRecord>;
  /** The object model's buckets (the same catalog), read only for who owns them. */
  private readonly buckets: Table<BucketRecord>;
  /**
   * Active keys' opened secrets by access key id: every signed request asks for one, and a
   * catalog read plus an AES-GCM open per request was 8% of the daemon's CPU on small GETs.
   * This store is the one writer of keys while the daemon runs (it holds the catalog), and a
   * key's secret and owner never change: only deleting a key (or its user) ends an entry.
   */
  private readonly secrets = new Map<string, { secret: string; owner: string }>();
  /** Bumped by every delete: a lookup that started before one does not fill the cache. */
  private secretsGeneration = 0;

  constructor(
    private readonly store: CatalogStore,
    private readonly box: SecretBox,
  ) {
    this.users = new Table(store, userSchema);
    this.keys = new Table(store, keySchema);
    this.buckets = new Table(store, BUCKET_SCHEMA);
  }

  async createUser(name: string): Promise<UserRecord> {
    if (!USER_NAME_PATTERN.test(name)) {
      throw new StorageError('INVALID_ARGUMENT', `'${name}' is not a valid user name (1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit)`);
    }
    const record: UserRecord = { name, createdAt: new Date().toISOString() };
    const txn = new TxnBuilder();
    this.users.put(txn, record);
    const result = await this.store.txn(txn.compares, txn.ops);
    if (!result.succeeded) throw new StorageError('ALREADY_EXISTS', `the user '${name}' already exists`);
    return record;
  }

  async listUsers(): Promise<UserRecord[]> {
    const out: UserRecord[] = [];
    for await (const user of this.users.records()) out.push(user);
    return out;
  }

  async user(name: string): Promise<UserRecord> {
    return (await this.versionedUser(name)).record;
  }

  /** A user's keys, without their secrets. */
  async keysOf(name: string): Promise<AccessKeyInfo[]> {
    return (await this.versionedKeysOf(name)).map((k) => keyInfo(k.record));
  }

  /**
   * Deletes a user and its keys in one transaction, refused (BUSY) while it owns buckets: a
   * bucket's owner is the user's name, so a user made later under the same name would own them,
   * data and all; the refusal's fix names `strata bucket chown` and `strata bucket delete --purge`.
   * A bucket given to the user while this runs makes the commit fail (holdUserInto). (A bucket the
   * user creates while this runs is not seen: its request was signed before the keys went.)
   */
  async deleteUser(name: string): Promise<void> {
    const user = await this.versionedUser(name);
    const owned = await this.buckets.indexPage('owner', `${name}${KEY_END}`, { limit: OWNED_BUCKETS_NAMED + 1 });
    if (owned.records.length > 0) {
      const named = owned.records.slice(0, OWNED_BUCKETS_NAMED).map((b) => b.record.name);
      const more = owned.records.length > OWNED_BUCKETS_NAMED ? ' and more' : '';
      throw new StorageError('BUSY', `the user '${name}' still owns buckets (${named.map((b) => `'${b}'`).join(', ')}${more}); a user made later under the same name would own them`, {
        fix: { operation: 'removeBuckets', buckets: named, text: 'give each to another user or delete it, objects and all, first: {}' },
      });
    }
    const keys = await this.versionedKeysOf(name);
    const txn = new TxnBuilder();
    this.users.delete(txn, user);
    for (const key of keys) this.keys.delete(txn, key);
    this.forgetSecrets(keys.map((k) => k.record.id));
    try {
      await txn.commit(this.store);
    } finally {
      this.forgetSecrets(keys.map((k) => k.record.id));
    }
  }

  /** A new active key for `owner`; the only time its secret is returned. */
  async createKey(owner: string): Promise<AccessKeyInfo & { secret: string }> {
    const user = await this.versionedUser(owner);
    const existing = await this.versionedKeysOf(owner);
    if (existing.length >= MAX_KEYS_PER_USER) {
      throw new StorageError('LIMIT_EXCEEDED', `the user '${owner}' already has ${existing.length} access keys (at most ${MAX_KEYS_PER_USER}); delete one first`);
    }
    const id = newAccessKeyId();
    const secret = randomBytes(SECRET_RANDOM_BYTES).toString('base64url');
    const record: AccessKeyRecord = { id, owner, createdAt: new Date().toISOString(), status: 'active', sealedSecret: this.box.seal(secret, id) };
    const txn = new TxnBuilder();
    // The owner must still exist when the key is written (a racing user delete wins or loses whole).
    txn.compares.push({ key: this.users.recordKey(owner), modRevision: user.modRevision });
    this.keys.put(txn, record);
    await txn.commit(this.store);
    return { ...keyInfo(record), secret };
  }

  async key(id: string): Promise<AccessKeyInfo> {
    const found = await this.keys.get(id);
    if (found === undefined) throw new StorageError('NOT_FOUND', `the access key '${id}' does not exist`);
    return keyInfo(found.record);
  }

  async listKeys(): Promise<AccessKeyInfo[]> {
    const out: AccessKeyInfo[] = [];
    for await (const key of this.keys.records()) out.push(keyInfo(key));
    return out;
  }

  async deleteKey(id: string): Promise<void> {
    const found = await this.keys.get(id);
    if (found === undefined) throw new StorageError('NOT_FOUND', `the access key '${id}' does not exist`);
    const txn = new TxnBuilder();
    this.keys.delete(txn, found);
    this.forgetSecrets([id]);
    try {
      await txn.commit(this.store);
    } finally {
      this.forgetSecrets([id]);
    }
  }

  /** The secret and owner of an active key, for SigV4; undefined for an unknown or inactive key. */
  async secretFor(id: string): Promise<{ secret: string; owner: string } | undefined> {
    const cached = this.secrets.get(id);
    if (cached !== undefined) return cached;
    const generation = this.secretsGeneration;
    const found = await this.keys.get(id);
    if (found === undefined || found.record.status !== 'active') return undefined;
    const opened = { secret: this.box.open(found.record.sealedSecret, id), owner: found.record.owner };
    if (generation === this.secretsGeneration) {
      if (this.secrets.size >= SECRET_CACHE_ENTRIES_MAX) this.secrets.clear();
      this.secrets.set(id, opened);
    }
    return opened;
  }

  /** Drops cached secrets before and after a delete commits (a lookup racing it fills nothing). */
  private forgetSecrets(ids: readonly string[]): void {
    this.secretsGeneration++;
    for (const id of ids) this.secrets.delete(id);
  }

  /**
   * Adds to `txn` a rewrite of the user's record, compared against the one read now: the
   * transaction commits only while the user exists, and a user delete that read the record before
   * it fails its own commit (BUSY) instead of deleting a user that `txn` gives a bucket to (bucket
   * chown). NOT_FOUND when there is no such user.
   */
  async holdUserInto(txn: TxnBuilder, name: string): Promise<void> {
    const user = await this.versionedUser(name);
    this.users.put(txn, user.record, user);
  }

  /** Which of `names` are users now (one catalog read per name, batched). */
  async existingUsers(names: readonly string[]): Promise<Set<string>> {
    const unique = [...new Set(names)];
    const found = await this.users.getMany(unique);
    return new Set(unique.filter((_, i) => found[i] !== undefined));
  }

  private async versionedUser(name: string): Promise<Versioned<UserRecord>> {
    const found = await this.users.get(name);
    if (found === undefined) throw new StorageError('NOT_FOUND', `the user '${name}' does not exist`, { fix: { operation: 'listUsers', text: 'check the name; {} lists the users' } });
    return found;
  }

  private async versionedKeysOf(name: string): Promise<Versioned<AccessKeyRecord>[]> {
    const out: Versioned<AccessKeyRecord>[] = [];
    for await (const key of this.keys.indexScan('owner', `${name}/`)) out.push(key);
    return out;
  }
}

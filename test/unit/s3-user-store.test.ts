/**
 * The S3 user store: users and access keys in the catalog, secrets sealed under the data
 * folder's key file (0600), shown once, recoverable for SigV4, bound to their key id.
 */
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { listAll } from '../../src/core/catalog-store.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { MemoryCatalogStore } from '../../src/meta/memory-catalog.js';
import { SecretBox } from '../../src/objects/users/secret-box.js';
import { UserStore } from '../../src/objects/users/user-store.js';
import { tempDir } from '../support/tmp.js';

describe('SecretBox', () => {
  it('creates its key file once, owner-only, and opens what it sealed', () => {
    const file = path.join(tempDir(), 'key');
    const box = SecretBox.openOrCreate(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const key = readFileSync(file);
    const sealed = box.seal('the secret', 'AKID');
    expect(sealed).not.toContain('the secret');
    const again = SecretBox.openOrCreate(file);
    expect(readFileSync(file).equals(key)).toBe(true);
    expect(again.open(sealed, 'AKID')).toBe('the secret');
    expect(() => again.open(sealed, 'OTHER')).toThrow(/does not decrypt/);
    expect(() => SecretBox.withKey(Buffer.alloc(32, 7)).open(sealed, 'AKID')).toThrow(/does not decrypt/);
  });

  it('refuses a key file others can read, or of the wrong size', () => {
    const dir = tempDir();
    const open = path.join(dir, 'open');
    SecretBox.openOrCreate(open);
    chmodSync(open, 0o644);
    expect(() => SecretBox.openOrCreate(open)).toThrow(/chmod 600/);
    const short = path.join(dir, 'short');
    writeFileSync(short, Buffer.alloc(5), { mode: 0o600 });
    expect(() => SecretBox.openOrCreate(short)).toThrow(/holds 5 bytes/);
  });
});

describe('UserStore', () => {
  function store(): { users: UserStore; catalog: MemoryCatalogStore } {
    const catalog = new MemoryCatalogStore();
    return { users: new UserStore(catalog, SecretBox.withKey(Buffer.alloc(32, 1))), catalog };
  }

  it('creates, lists and refuses duplicate or malformed users', async () => {
    const { users } = store();
    await users.createUser('alice');
    await users.createUser('bob');
    await expect(users.createUser('alice')).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    await expect(users.createUser('no/slash')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect((await users.listUsers()).map((u) => u.name)).toEqual(['alice', 'bob']);
    await expect(users.user('carol')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('returns a secret once, keeps it sealed in the catalog, and opens it for SigV4', async () => {
    const { users, catalog } = store();
    await users.createUser('alice');
    const key = await users.createKey('alice');
    expect(key.id).toMatch(/^[A-Z0-9]{20}$/);
    expect(key.secret).toHaveLength(40);
    expect(await users.keysOf('alice')).toEqual([{ id: key.id, owner: 'alice', createdAt: key.createdAt, status: 'active' }]);
    const stored = [];
    for await (const entry of listAll(catalog, '')) stored.push(JSON.stringify(entry.value));
    expect(stored.join('\n')).not.toContain(key.secret);
    await expect(users.secretFor(key.id)).resolves.toEqual({ secret: key.secret, owner: 'alice' });
    await expect(users.secretFor('STRANOSUCHKEY')).resolves.toBeUndefined();
    await expect(users.createKey('nobody')).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('deletes a key, and a user with its keys', async () => {
    const { users } = store();
    await users.createUser('alice');
    const a = await users.createKey('alice');
    const b = await users.createKey('alice');
    // Both secrets looked up (and so remembered) before the deletes: a delete must still refuse them.
    await expect(users.secretFor(a.id)).resolves.toEqual({ secret: a.secret, owner: 'alice' });
    await expect(users.secretFor(b.id)).resolves.toEqual({ secret: b.secret, owner: 'alice' });
    await users.deleteKey(a.id);
    await expect(users.secretFor(a.id)).resolves.toBeUndefined();
    await expect(users.deleteKey(a.id)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await users.deleteUser('alice');
    await expect(users.secretFor(b.id)).resolves.toBeUndefined();
    expect(await users.listKeys()).toEqual([]);
  });

  it('keeps keys across a restart of a LevelDB catalog with the same key file', async () => {
    const dir = tempDir();
    const keyFile = path.join(dir, 's3-secrets.key');
    const first = await LevelCatalogStore.open(path.join(dir, 'catalog'));
    const created = await (async () => {
      const users = new UserStore(first, SecretBox.openOrCreate(keyFile));
      await users.createUser('alice');
      return users.createKey('alice');
    })();
    await first.close();
    const second = await LevelCatalogStore.open(path.join(dir, 'catalog'));
    try {
      const users = new UserStore(second, SecretBox.openOrCreate(keyFile));
      await expect(users.secretFor(created.id)).resolves.toEqual({ secret: created.secret, owner: 'alice' });
    } finally {
      await second.close();
    }
  });
});

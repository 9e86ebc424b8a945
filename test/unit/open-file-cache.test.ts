/**
 * OpenFileCache (src/store/open-file-cache.ts) over real files: a handle is opened once and
 * reused, the cache stays within its bound (the least recently used closed first), a forgotten
 * handle is closed once its last reader is done and never under it, and nothing is cached for a
 * missing file or a failed open.
 */
import { writeFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { OpenFileCache, type OpenFile } from '../../src/store/open-file-cache.js';
import { tempDir } from '../support/tmp.js';

/** Files k0..k(n-1) holding their own names, and an opener that counts the opens. */
function files(count: number): { opened: Map<string, fs.FileHandle[]>; open: (key: string) => () => Promise<OpenFile | undefined> } {
  const dir = tempDir();
  for (let i = 0; i < count; i++) writeFileSync(path.join(dir, `k${i}`), `k${i}`);
  const opened = new Map<string, fs.FileHandle[]>();
  const open = (key: string) => async (): Promise<OpenFile | undefined> => {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(path.join(dir, key), 'r');
    } catch {
      return undefined;
    }
    opened.set(key, [...(opened.get(key) ?? []), handle]);
    return { handle, sizeBytes: (await handle.stat()).size };
  };
  return { opened, open };
}

async function readAll(file: OpenFile): Promise<string> {
  const out = Buffer.alloc(file.sizeBytes);
  await file.handle.read(out, 0, out.length, 0);
  return out.toString();
}

const isClosed = (handle: fs.FileHandle | undefined) => handle?.fd === -1;

describe('OpenFileCache', () => {
  it('opens a file once and reuses the handle; keeps at most its bound open, least recently used closed first', async () => {
    const { opened, open } = files(4);
    const cache = new OpenFileCache(2);
    expect(await cache.use('k0', open('k0'), readAll)).toBe('k0');
    expect(await cache.use('k0', open('k0'), readAll)).toBe('k0');
    expect(opened.get('k0')).toHaveLength(1);
    await cache.use('k1', open('k1'), readAll);
    await cache.use('k0', open('k0'), readAll); // k0 is now the most recently used
    await cache.use('k2', open('k2'), readAll); // pushes k1 out
    expect(cache.size).toBe(2);
    await new Promise((resolve) => setImmediate(resolve)); // the push-out closes in the background
    expect(isClosed(opened.get('k1')![0])).toBe(true);
    expect(isClosed(opened.get('k0')![0])).toBe(false);
    expect(await cache.use('k1', open('k1'), readAll)).toBe('k1');
    expect(opened.get('k1')).toHaveLength(2);
  });

  it('a forgotten handle stays open for the read using it and is closed after; the next read opens the file again', async () => {
    const { opened, open } = files(1);
    const cache = new OpenFileCache(4);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let started!: () => void;
    const reading = new Promise<void>((resolve) => (started = resolve));
    const slow = cache.use('k0', open('k0'), async (file) => {
      started();
      await gate;
      return readAll(file);
    });
    await reading;
    await cache.forget('k0');
    const first = opened.get('k0')![0];
    expect(isClosed(first)).toBe(false);
    release();
    expect(await slow).toBe('k0');
    expect(isClosed(first)).toBe(true);
    expect(await cache.use('k0', open('k0'), readAll)).toBe('k0');
    expect(opened.get('k0')).toHaveLength(2);
  });

  it('caches nothing for a missing file or a failed open', async () => {
    const { open } = files(0);
    const cache = new OpenFileCache(4);
    expect(await cache.use('nothing', open('nothing'), readAll)).toBeUndefined();
    expect(cache.size).toBe(0);
    await expect(cache.use('broken', () => Promise.reject(new Error('EIO')), readAll)).rejects.toThrow('EIO');
    expect(cache.size).toBe(0);
  });
});

describe('OpenFileCache.peek', () => {
  it('answers a file only while it is open and cached', async () => {
    const { open } = files(2);
    const cache = new OpenFileCache(1);
    expect(cache.peek('k0')).toBeUndefined();
    await cache.use('k0', open('k0'), async () => undefined);
    const file = cache.peek('k0');
    expect(file?.sizeBytes).toBe(2);
    await cache.use('k1', open('k1'), async () => undefined); // pushes k0 out (bound 1)
    expect(cache.peek('k0')).toBeUndefined();
    expect(cache.peek('k1')?.sizeBytes).toBe(2);
    await cache.forget('k1');
    expect(cache.peek('k1')).toBeUndefined();
    await cache.use('missing', open('missing'), async () => undefined);
    expect(cache.peek('missing')).toBeUndefined();
  });
});

import { describe, expect, it } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import { LocalLayerStore } from '../../src/store/local-layer-store.js';
import { MemoryLayerStore } from '../../src/store/memory-layer-store.js';
import { tempDir } from '../support/tmp.js';
import { layerStoreConformance } from './layer-store.js';

layerStoreConformance('local folder', async () => new LocalLayerStore(tempDir()));
layerStoreConformance('memory', async () => new MemoryLayerStore());

describe('LocalLayerStore', () => {
  it('keeps every name inside its root: path separators and dot names are refused', async () => {
    const store = new LocalLayerStore(tempDir());
    for (const ref of [
      { pool: '..', fileName: 'x' },
      { pool: 'p', fileName: '../../etc/passwd' },
      { pool: 'a/b', fileName: 'x' },
      { pool: 'p', fileName: '' },
    ]) {
      let error: unknown;
      try {
        await store.open(ref, { readOnly: true });
      } catch (err) {
        error = err;
      }
      expect(isStorageError(error, 'INVALID_ARGUMENT'), `${JSON.stringify(ref)}: ${String(error)}`).toBe(true);
    }
  });
});

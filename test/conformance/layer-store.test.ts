import { describe, it } from 'vitest';
import { LocalLayerStore } from '../../src/store/local-layer-store.js';
import { MemoryLayerStore } from '../../src/store/memory-layer-store.js';
import { expectCode } from '../support/expect-error.js';
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
      // A rejected promise, not a synchronous throw: callers await.
      await expectCode(store.open(ref, { readOnly: true }), 'INVALID_ARGUMENT');
    }
  });
});

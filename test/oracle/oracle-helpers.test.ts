/**
 * The oracle's own comparisons must be able to fail: a map or content comparison that accepts
 * anything would make every oracle test pass vacuously. No qemu needed here.
 */
import { describe, expect, it } from 'vitest';
import {
  compareMaps,
  expectSameBytes,
  qemuLayerSegments,
  strataSegments,
  workload,
  type QemuMapEntry,
} from './support.js';

const qemu: QemuMapEntry[] = [
  { start: 0, length: 4096, depth: 0, present: true, zero: false, data: true, offset: 65536 },
  // qemu's zero=true on data means "the host file has a hole here": still data for the layer.
  { start: 4096, length: 4096, depth: 0, present: true, zero: true, data: true, offset: 69632 },
  { start: 8192, length: 8192, depth: 0, present: true, zero: true, data: false },
  { start: 16384, length: 8192, depth: 1, present: true, zero: false, data: true, offset: 0 },
  { start: 24576, length: 8192, depth: 0, present: false, zero: true, data: false },
];
const size = 32768;

describe('oracle helpers', () => {
  it('classifies qemu map entries per layer', () => {
    expect(qemuLayerSegments(qemu).map((s) => s.kind)).toEqual(['data', 'data', 'zero', 'unallocated', 'unallocated']);
  });

  it('accepts the same map however it is split', () => {
    const strata = strataSegments([
      { guestOffset: 0, lengthBytes: 8192, kind: 'data', hostOffset: 65536 },
      { guestOffset: 8192, lengthBytes: 8192, kind: 'zero' },
      { guestOffset: 16384, lengthBytes: 16384, kind: 'unallocated' },
    ]);
    expect(() => compareMaps(strata, qemuLayerSegments(qemu), size, 'same')).not.toThrow();
  });

  it('rejects a different kind, a different host offset, and a short map', () => {
    const base = [
      { guestOffset: 0, lengthBytes: 8192, kind: 'data' as const, hostOffset: 65536 },
      { guestOffset: 8192, lengthBytes: 8192, kind: 'zero' as const },
      { guestOffset: 16384, lengthBytes: 16384, kind: 'unallocated' as const },
    ];
    const wrongKind = base.map((e, i) => (i === 1 ? { ...e, kind: 'unallocated' as const } : e));
    const wrongHost = base.map((e, i) => (i === 0 ? { ...e, hostOffset: 131072 } : e));
    const short = base.slice(0, 2);
    for (const [what, map] of [
      ['kind', wrongKind],
      ['host', wrongHost],
      ['short', short],
    ] as const) {
      expect(() => compareMaps(strataSegments(map), qemuLayerSegments(qemu), size, what), what).toThrow();
    }
  });

  it('ignores host offsets of compressed clusters', () => {
    const q: QemuMapEntry[] = [{ start: 0, length: size, depth: 0, present: true, zero: false, data: true }];
    const strata = strataSegments([{ guestOffset: 0, lengthBytes: size, kind: 'data', compressed: true }]);
    expect(() => compareMaps(strata, qemuLayerSegments(q), size, 'compressed')).not.toThrow();
  });

  it('reports the first differing byte', () => {
    const a = Buffer.alloc(10000, 1);
    const b = Buffer.from(a);
    expect(() => expectSameBytes(a, b, 'equal')).not.toThrow();
    b[7777] = 2;
    expect(() => expectSameBytes(a, b, 'one byte')).toThrow(/first difference at byte 7777/);
    expect(() => expectSameBytes(a.subarray(1), b, 'length')).toThrow();
  });

  it('generates the same workload for the same seed', () => {
    const spec = { sizeBytes: 8 * 1024 * 1024 + 2560, clusterSizeBytes: 4096, patterns: ['p'], zeroes: true, discards: true, compressed: true };
    expect(workload({ ...spec, seed: 5 })).toEqual(workload({ ...spec, seed: 5 }));
    expect(workload({ ...spec, seed: 5 })).not.toEqual(workload({ ...spec, seed: 6 }));
  });
});

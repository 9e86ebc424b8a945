import { it } from 'vitest';
import { readFileSync } from 'node:fs';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { qemuImg, qemuIo } from '../support/tools.js';

const COPIED = 1n << 63n;
it('overlap writes', async () => {
  qemuImg(['create', '-q', '-f', 'qcow2', '/tmp/ov.qcow2', '4M']);
  qemuIo(['-f', 'qcow2', '-c', 'write -P 0xa1 0 192k', '/tmp/ov.qcow2']);
  const pristine = new Uint8Array(readFileSync('/tmp/ov.qcow2'));
  const dv0 = new DataView(pristine.buffer);
  const l1 = Number(dv0.getBigUint64(40)), rt = Number(dv0.getBigUint64(48));
  const l2 = Number(dv0.getBigUint64(l1) & 0x00fffffffffffe00n);
  const rb = Number(dv0.getBigUint64(rt));
  console.log({ l1, rt, l2, rb });
  for (const [label, mutate] of [
    ['L2[5] -> reftable', (dv: DataView) => dv.setBigUint64(l2 + 40, COPIED | BigInt(rt))],
    ['L2[5] -> L1', (dv: DataView) => dv.setBigUint64(l2 + 40, COPIED | BigInt(l1))],
    ['L2[5] -> refblock', (dv: DataView) => dv.setBigUint64(l2 + 40, COPIED | BigInt(rb))],
    ['L1[0] -> reftable', (dv: DataView) => dv.setBigUint64(l1, COPIED | BigInt(rt))],
    ['reftable[0] -> L1', (dv: DataView) => dv.setBigUint64(rt, BigInt(l1))],
    ['reftable[0] -> reftable', (dv: DataView) => dv.setBigUint64(rt, BigInt(rt))],
    ['refblock self 0', (dv: DataView) => dv.setUint16(rb + (rb / 65536) * 2, 0)],
  ] as const) {
    const bytes = pristine.slice();
    mutate(new DataView(bytes.buffer));
    const f = new MemoryHostFile(bytes);
    let msg = 'ok';
    try {
      const img = await Qcow2Image.open(f);
      await img.write(5 * 65536, new Uint8Array(4096).fill(0x5a));
      await img.write(20 * 65536 + 512, new Uint8Array(3 * 65536).fill(0x5b));
      await img.flush();
      await img.close();
    } catch (e) { msg = String(e); }
    let after = '';
    try {
      const ro = await Qcow2Image.open(f.readOnlyView(), { readOnly: true });
      const r = await ro.check();
      after = `reopen ok: corruptions ${r.corruptions} leaks ${r.leaks}; L1[0]=${new DataView(f.snapshotBytes().buffer).getBigUint64(l1).toString(16)} RT[0]=${new DataView(f.snapshotBytes().buffer).getBigUint64(rt).toString(16)}`;
    } catch (e) { after = `reopen: ${e}`; }
    console.log(`${label}: write -> ${msg} | ${after}`);
  }
});

import { it } from 'vitest';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
it('growth trace', async () => {
  const f = new MemoryHostFile();
  await Qcow2Image.create(f, { sizeBytes: 64 << 20, clusterSizeBytes: 512, refcountBits: 64 });
  const img = await Qcow2Image.open(f);
  const rc = img.refcounts as any;
  console.log('initial table len', rc.table.length, 'epb', rc.entriesPerBlock, 'tableOffset', rc.tableOffset, 'blocks', rc.table.filter((x: number) => x));
  const grow = rc.growTable.bind(rc);
  let n = 0;
  rc.growTable = async (min: number) => {
    if (n++ < 6) console.log('growTable(min', min, ') table.length', rc.table.length, 'file', await f.sizeBytes(), new Error().stack!.split('\n').slice(2, 7).map((l) => l.trim()).join(' < '));
    return grow(min);
  };
  const blockFor = rc.blockFor.bind(rc);
  let m = 0;
  rc.blockFor = async (c: number) => { if (m++ < 200 && Math.floor(c / 64) >= rc.table.length) console.log('blockFor cluster', c); return blockFor(c); };
  try { for (let i = 0; i < 128; i++) { await img.write(i * 512, new Uint8Array(512).fill(1)); } console.log("128 single writes ok"); await img.write(65536, new Uint8Array(65536)); console.log('ok'); } catch (e) { console.log(String(e)); }
});

import { it } from 'vitest';
import { prepareScenario, runWorkload } from './harness.js';
import { VARIANTS } from './workload.js';
it('growth happens', async () => {
  for (const name of ['512 B clusters, refcount_bits=64 (refcount table growth)', '512 B clusters, refcount_bits=1']) {
    const v = VARIANTS.find((x) => x.name === name)!;
    for (const seed of [1000, 1001, 1002, 1003, 1004, 1005, 1006]) {
      const sc = await prepareScenario(v, seed);
      const before = await (await import('../../formats/qcow2/index.js')).Qcow2Image.open(sc.base.clone(), { readOnly: true });
      const r = await runWorkload(sc);
      const img = r.image!;
      console.log(name.slice(0, 30), seed, 'table', before.refcounts.tableOffset, '->', img.refcounts.tableOffset, 'blocks', before.refcounts.table.filter((x) => x).length, '->', img.refcounts.table.filter((x) => x).length, 'file', await r.file.sizeBytes(), 'hostOps', r.hostOps);
    }
  }
});

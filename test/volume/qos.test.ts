/**
 * QoS settings in the volume layer (issue 15): precedence (volume's own limits > its policy > the
 * pool's own limits > the pool's policy), policies that cannot be deleted while attached, settings
 * kept across a restart, and an exported volume's throttle following a change at once.
 */
import { describe, expect, it } from 'vitest';
import { expectCode, makeEnv, MiB } from './helpers.js';

describe('QoS settings', () => {
  it('resolves the limits that apply by precedence and keeps them across a restart', async () => {
    const env = await makeEnv();
    const s = () => env.service;
    await s().createPool('p');
    await s().createVolume('p', 'vm', 8 * MiB);
    expect(await s().volumeQos('p', 'vm')).toMatchObject({ effective: undefined, source: 'none' });

    await s().createQosPolicy('gold', { readIops: 5000, writeIops: 2000 });
    await s().createQosPolicy('bronze', { totalIops: 100 });
    await s().setPoolQos('p', { policy: 'bronze' });
    expect(await s().volumeQos('p', 'vm')).toMatchObject({ effective: { totalIops: 100 }, source: 'pool-policy', sourcePolicy: 'bronze' });
    await s().setPoolQos('p', { limits: { writeBps: 8 * MiB } });
    expect(await s().volumeQos('p', 'vm')).toMatchObject({ effective: { writeBps: 8 * MiB }, source: 'pool' });
    await s().setVolumeQos('p', 'vm', { policy: 'gold' });
    expect(await s().volumeQos('p', 'vm')).toMatchObject({ policy: 'gold', effective: { readIops: 5000, writeIops: 2000 }, source: 'volume-policy' });
    await s().setVolumeQos('p', 'vm', { limits: { readIops: 500, readIopsBurst: 2000, burstSeconds: 5 } });
    const own = await s().volumeQos('p', 'vm');
    expect(own).toMatchObject({ limits: { readIops: 500, readIopsBurst: 2000, burstSeconds: 5 }, policy: 'gold', source: 'volume' });
    expect(own.effective).toEqual({ readIops: 500, readIopsBurst: 2000, burstSeconds: 5 });
    // Field by field: null removes one (and a rate's burst with it).
    await s().setVolumeQos('p', 'vm', { limits: { writeIops: 300, readIops: null } });
    expect((await s().volumeQos('p', 'vm')).effective).toEqual({ writeIops: 300 });

    await env.restart();
    expect(await s().volumeQos('p', 'vm')).toMatchObject({ limits: { writeIops: 300 }, policy: 'gold', source: 'volume' });
    expect(await s().poolQos('p')).toMatchObject({ limits: { writeBps: 8 * MiB }, policy: 'bronze', source: 'pool' });
    expect((await s().listQosPolicies()).map((p) => [p.name, p.volumeCount, p.poolCount])).toEqual([
      ['bronze', 0, 1],
      ['gold', 1, 0],
    ]);

    await s().clearVolumeQos('p', 'vm');
    expect(await s().volumeQos('p', 'vm')).toMatchObject({ limits: undefined, policy: undefined, source: 'pool' });
    await s().clearPoolQos('p');
    expect(await s().volumeQos('p', 'vm')).toMatchObject({ effective: undefined, source: 'none' });
  });

  it('refuses to delete a policy in use, naming its users and the fix; checks what it is given', async () => {
    const env = await makeEnv();
    const s = env.service;
    await s.createPool('p');
    await expectCode(s.createVolume('p', 'a', MiB, { qos: { policy: 'missing' } }), 'NOT_FOUND', /QoS policy 'missing' does not exist; create it first/);
    await s.createQosPolicy('silver', { writeBps: 4 * MiB });
    await expectCode(s.createQosPolicy('silver', { readIops: 1 }), 'ALREADY_EXISTS', /already exists/);
    await expectCode(s.createQosPolicy('empty', {}), 'INVALID_ARGUMENT', /sets no limit/);
    await expectCode(s.createQosPolicy('bad', { readIops: -1 }), 'INVALID_ARGUMENT', /at least 1/);
    await s.createVolume('p', 'a', MiB, { qos: { policy: 'silver' } });
    await s.createVolume('p', 'b', MiB, { qos: { limits: { readIops: 10 } } });
    expect(await s.volumeQos('p', 'b')).toMatchObject({ limits: { readIops: 10 }, source: 'volume' });
    await s.setPoolQos('p', { policy: 'silver' });
    await expectCode(s.deleteQosPolicy('silver'), 'BUSY', /attached to volume p\/a, pool p; detach it first/);
    await s.clearVolumeQos('p', 'a');
    await s.clearPoolQos('p');
    await s.deleteQosPolicy('silver');
    await expectCode(s.qosPolicyInfo('silver'), 'NOT_FOUND');
    await expectCode(s.setVolumeQos('p', 'a', { policy: 'silver' }), 'NOT_FOUND', /create it first/);
    // A volume in the trash keeps its policy, and the policy stays.
    await s.createQosPolicy('tier2', { readIops: 100 });
    await s.setVolumeQos('p', 'b', { policy: 'tier2' });
    await s.trashVolume('p', 'b');
    await expectCode(s.deleteQosPolicy('tier2'), 'BUSY', /volume p\/b \(in the trash\)/);
  });

  it("an exported volume's throttle follows a change at once: waiting requests go when the limit is lifted", async () => {
    const env = await makeEnv();
    const s = env.service;
    await s.createPool('p');
    await s.createVolume('p', 'vm', 8 * MiB);
    const device = await s.openDevice('p', 'vm');
    try {
      expect(await s.qosStats()).toEqual([{ pool: 'p', volume: 'vm', limited: false, queued: 0, throttledRequests: 0, throttledSeconds: 0 }]);
      await s.createQosPolicy('slow', { readIops: 1 });
      await s.setVolumeQos('p', 'vm', { policy: 'slow' });
      // One read per second: the first goes, the other four wait in the throttle, and so does a
      // read an NBD server answers from block status alone (readSkipped).
      const reads = Array.from({ length: 5 }, (_, i) => device.read(i * 4096, new Uint8Array(4096)));
      reads.push(device.readSkipped(0, 4096));
      const waiting = await s.qosStats();
      expect(waiting[0]).toMatchObject({ limited: true, queued: 5 });
      // Changing the policy's limits reaches the exported volume too.
      await s.setQosPolicy('slow', { readIops: null, writeIops: 5 });
      await Promise.all(reads);
      const after = (await s.qosStats())[0]!;
      expect(after).toMatchObject({ limited: true, queued: 0, throttledRequests: 5 });
      expect(after.throttledSeconds).toBeGreaterThanOrEqual(0);
      await s.clearVolumeQos('p', 'vm');
      expect((await s.qosStats())[0]).toMatchObject({ limited: false });
      // A vhost-user request over several guest buffers is one operation: under one read per
      // second it goes at once, and the read after it is the one that waits.
      await s.setVolumeQos('p', 'vm', { limits: { readIops: 1, writeIops: 1 } });
      const many = device.readSegments!(0, [new Uint8Array(4096), new Uint8Array(8192), new Uint8Array(4096)]);
      const manyWrites = device.writeSegments!(0, [new Uint8Array(4096), new Uint8Array(4096)]);
      expect((await s.qosStats())[0]).toMatchObject({ limited: true, queued: 0 });
      const next = device.read(0, new Uint8Array(4096));
      expect((await s.qosStats())[0]).toMatchObject({ queued: 1 });
      await s.clearVolumeQos('p', 'vm');
      await Promise.all([many, manyWrites, next]);
    } finally {
      await device.close();
    }
  });
});

/** The Coordinator conformance suite: every implementation runs it (coordinator.test.ts). */
import { expectCode } from '../support/expect-error.js';
import { describe, expect, it } from 'vitest';
import type { Coordinator } from '../../src/core/coordinator.js';
import { isStorageError } from '../../src/core/errors.js';

export function coordinatorConformance(name: string, open: () => Promise<Coordinator>): void {
  describe(`Coordinator conformance: ${name}`, () => {
    it('one writer per volume; the refusal names the holder; release frees it', async () => {
      const coordinator = await open();
      const lease = await coordinator.acquireWriter('vol-1', 'nbd export default/vm1');
      expect(await coordinator.writerOf('vol-1')).toBe('nbd export default/vm1');
      expect(await expectCode(coordinator.acquireWriter('vol-1', 'flatten job 7'), 'BUSY')).toContain('nbd export default/vm1');
      expect(await expectCode(coordinator.acquireWriter('vol-1', 'nbd export default/vm1'), 'BUSY')).toContain('vol-1');
      const other = await coordinator.acquireWriter('vol-2', 'flatten job 7');
      await lease.release();
      await lease.release();
      expect(await coordinator.writerOf('vol-1')).toBeUndefined();
      const next = await coordinator.acquireWriter('vol-1', 'flatten job 7');
      expect(next.fencingToken).toBeGreaterThan(lease.fencingToken);
      await next.release();
      await other.release();
      await coordinator.close();
    });

    it('a stale release does not free a newer lease', async () => {
      const coordinator = await open();
      const first = await coordinator.acquireWriter('v', 'a');
      await first.release();
      const second = await coordinator.acquireWriter('v', 'b');
      await first.release();
      expect(await coordinator.writerOf('v')).toBe('b');
      await second.release();
      await coordinator.close();
    });

    it('concurrent acquires of one volume: exactly one wins', async () => {
      const coordinator = await open();
      const outcomes = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => coordinator.acquireWriter('v', `h${i}`)));
      expect(outcomes.filter((o) => o.status === 'fulfilled').length).toBe(1);
      for (const o of outcomes) if (o.status === 'rejected') expect(isStorageError(o.reason, 'BUSY')).toBe(true);
      await coordinator.close();
    });

    it('close revokes every lease: holders see lost abort, and nothing new is granted', async () => {
      const coordinator = await open();
      const lease = await coordinator.acquireWriter('v', 'a');
      expect(lease.lost.aborted).toBe(false);
      await coordinator.close();
      expect(lease.lost.aborted).toBe(true);
      await expectCode(coordinator.acquireWriter('w', 'b'), 'BUSY');
    });
  });
}

/**
 * A read-write export of a volume that another read-write export already serves is said on
 * stderr (found by an operator walkthrough: an NBD read-write export of a volume a guest had
 * attached read-write was made without a word, where a second vhost-user attach is refused). Not
 * refused: the daemon keeps both coherent, and NBD multi-conn or a shared-disk setup is
 * deliberate; but a guest's file system and an NBD client that do not coordinate corrupt it.
 */
import { describe, expect, it } from 'vitest';
import { assertBuilt, useDaemon } from './harness.js';

assertBuilt();

const NOTE = /note: 'default\/vm1' is also attached read-write over vhost-user at .*vm1\.sock \(export [0-9a-f]+\): two writers that do not coordinate corrupt the file system a guest has mounted; for a backup, export a snapshot or use --read-only/;

describe('exports of a volume another read-write export serves', () => {
  const suite = useDaemon();

  it('a read-write NBD export of an attached volume gets the note; read-only and snapshot exports do not', () => {
    const { d } = suite;
    d.cliOk(['volume', 'create', 'vm1', '16M']);
    const attached = d.cliOk(['volume', 'attach', 'vm1', '--vhost-user', suite.file('vm1.sock')]);
    expect(attached.stderr).not.toMatch(/note:/);

    const rw = d.cliOk(['volume', 'export-nbd', 'vm1']);
    expect(rw.stderr).toMatch(NOTE);
    d.cliOk(['volume', 'unexport-nbd', 'vm1']);

    expect(d.cliOk(['volume', 'export-nbd', 'vm1', '--read-only']).stderr).not.toMatch(/note:/);
    d.cliOk(['volume', 'unexport-nbd', 'vm1']);
    d.cliOk(['snap', 'create', 'vm1@backup']);
    expect(d.cliOk(['volume', 'export-nbd', 'vm1@backup']).stderr).not.toMatch(/note:/);
  });

  it('attaching a volume that is exported read-write over NBD gets the note, naming the NBD export', () => {
    const { d } = suite;
    d.cliOk(['volume', 'create', 'vm2', '16M']);
    d.cliOk(['volume', 'export-nbd', 'vm2']);
    const attached = d.cliOk(['volume', 'attach', 'vm2', '--vhost-user', suite.file('vm2.sock'), '--json']);
    expect(attached.stderr).toMatch(/note: 'default\/vm2' is also exported read-write over NBD as 'default\/vm2' \(export [0-9a-f]+\)/);
    // --json keeps stdout the export alone.
    expect(JSON.parse(attached.stdout)).toMatchObject({ type: 'vhost-user', volume: 'vm2' });
  });
});

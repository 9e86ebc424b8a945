/**
 * `strata status`, `strata pool ...` and `strata volume ...` against a running daemon, as an
 * operator types them: tables and --json, sizes with units, stdin/stdout with '-', progress bars,
 * and every failure with its exit status (1 error, 2 usage, 3 not found, 4 conflict/busy) and a
 * message that says what was wrong and what to do.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qemuImg, requireTool } from '../support/tools.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { assertBuilt, diffStream, patternBytes, startDaemon, writeRawImage, type Daemon } from './harness.js';

assertBuilt();

describe.skipIf(!requireTool('qemu-img'))('strata status / pool / volume', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    d = await startDaemon(f('data'));
  });
  afterAll(async () => {
    if (d) expect((await d.stop()).code).toBe(0);
    tmp?.cleanup();
  });

  it('help lists the command groups and their subcommands; usage mistakes exit 2', () => {
    const top = d.cliOk(['--help']).stdout;
    for (const g of ['serve', 'status', 'pool', 'volume', 'snap', 'job', 'img']) expect(top).toMatch(new RegExp(`^  ${g} `, 'm'));
    const vol = d.cliOk(['volume', '--help']).stdout;
    for (const s of ['create', 'list', 'info', 'resize', 'rename', 'delete', 'copy', 'import', 'export', 'du', 'flatten', 'diff', 'export-diff', 'import-diff']) {
      expect(vol).toMatch(new RegExp(`^  ${s} `, 'm'));
    }
    expect(vol).toMatch(/Exit status: 0 ok, 1 error, 2 usage error, 3 not found, 4 conflict or busy/);
    expect(d.cliOk(['volume', 'import', '--help']).stdout).toMatch(/^Usage: strata volume import FILE\|- \[POOL\/\]VOLUME/);
    expect(d.cliOk(['serve', '--help']).stdout).toMatch(/--listen HOST:PORT/);
    d.cliFails(['volume'], 2, /volume: missing subcommand/);
    d.cliFails(['volume', 'frob'], 2, /unknown subcommand 'frob'/, /available: create, list/);
    d.cliFails(['volume', 'info', 'v', '--bogus'], 2, /unknown option '--bogus'/);
    d.cliFails(['volume', 'info'], 2, /missing VOLUME/);
    d.cliFails(['volume', 'info', 'a', 'b'], 2, /unexpected argument 'b'/);
    d.cliFails(['volume', 'info', 'a/b/c'], 2, /'a\/b\/c' is not POOL\/VOLUME/);
    d.cliFails(['volume', 'info', 'bad name!'], 2, /'bad name!' is not a valid volume name/);
    d.cliFails(['status', 'extra'], 2, /unexpected argument 'extra'/);
  });

  it('status, and what the CLI says when the daemon is unreachable or refuses the token', () => {
    const out = d.cliOk(['status']).stdout;
    expect(out).toMatch(/^daemon +http:\/\/127\.0\.0\.1:\d+ \(ok\)$/m);
    expect(out).toMatch(/^version +\d+\.\d+\.\d+$/m);
    expect(out).toMatch(/^pools +default$/m);
    expect(d.json(['status'])).toMatchObject({ status: 'ok', pools: ['default'], url: d.url });
    d.cliFails(['status', '--url', 'http://127.0.0.1:1'], 1, /daemon not reachable at http:\/\/127\.0\.0\.1:1: connection refused/, /start it with 'strata serve'/);
    let r = d.cli(['status'], { env: { STRATA_URL: 'http://127.0.0.1:1' } });
    expect([r.code, r.stderr]).toEqual([1, expect.stringMatching(/daemon not reachable at http:\/\/127\.0\.0\.1:1/)]);
    d.cliFails(['status', '--token', 'wrong-token-wrong-token'], 1, /refused the request: the token was not accepted/, /pass --token, set STRATA_TOKEN/);
    r = d.cli(['status'], { env: { STRATA_DATA_DIR: f('nowhere') } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no token given \(--token, STRATA_TOKEN\) and .*nowhere\/token does not exist/);
    // STRATA_TOKEN and --token work without the token file; --data-dir points at it.
    expect(d.cli(['status'], { env: { STRATA_DATA_DIR: f('nowhere'), STRATA_TOKEN: d.token } }).code).toBe(0);
    expect(d.cli(['status', '--token', d.token], { env: { STRATA_DATA_DIR: f('nowhere') } }).code).toBe(0);
    expect(d.cli(['status', '--data-dir', f('data')], { env: { STRATA_DATA_DIR: f('nowhere') } }).code).toBe(0);
    d.cliFails(['status', '--url', 'ftp://x'], 2, /not an http or https URL/);
  });

  it('pool create, list, info, quota, du and delete', () => {
    expect(d.cliOk(['pool', 'create', 'fast', '--quota', '64M']).stdout).toBe("Pool 'fast' created (quota 64 MiB).\n");
    expect(d.cliOk(['pool', 'create', 'slow']).stdout).toBe("Pool 'slow' created.\n");
    d.cliFails(['pool', 'create', 'fast'], 4, /cannot create pool 'fast': pool 'fast' already exists \[ALREADY_EXISTS\]/, /choose another name/);
    d.cliFails(['pool', 'create', '-bad'], 2, /unknown option '-b'/);
    d.cliFails(['pool', 'create', '.bad'], 2, /'.bad' is not a valid pool name/);
    d.cliFails(['pool', 'create', 'p', '--quota', 'lots'], 2, /quota 'lots' is not a size/, /e\.g\. 10G/);
    d.cliFails(['pool', 'create'], 2, /missing NAME/);

    const table = d.cliOk(['pool', 'list']).stdout.split('\n');
    expect(table[0]).toMatch(/^NAME +VOLUMES +PROVISIONED +ALLOCATED +QUOTA$/);
    expect(table).toContainEqual(expect.stringMatching(/^fast +0 +0 B +0 B +64 MiB$/));
    expect(table).toContainEqual(expect.stringMatching(/^slow +0 +0 B +0 B +-$/));
    const pools = d.json(['pool', 'list']);
    expect(pools.find((p: { name: string }) => p.name === 'fast')).toMatchObject({ quotaBytes: 64 << 20, volumeCount: 0, location: path.join(f('data'), 'pools', 'fast') });

    expect(d.cliOk(['pool', 'info', 'fast']).stdout).toMatch(/^quota +64 MiB \(67108864 bytes\)$/m);
    d.cliFails(['pool', 'info', 'nope'], 3, /pool 'nope' does not exist \[NOT_FOUND\]/);

    expect(d.cliOk(['pool', 'quota', 'fast', '1G']).stdout).toBe("Pool 'fast' quota set to 1 GiB.\n");
    expect(d.json(['pool', 'quota', 'slow', '2G']).quotaBytes).toBe(2 * 2 ** 30);
    expect(d.cliOk(['pool', 'quota', 'slow', 'none']).stdout).toBe("Pool 'slow' has no quota now.\n");
    d.cliFails(['pool', 'quota', 'slow', 'heaps'], 2, /not a size/);
    d.cliFails(['pool', 'quota', 'nope', '1G'], 3, /NOT_FOUND/);
    d.cliFails(['pool', 'quota', 'slow'], 2, /missing SIZE/);

    d.cliOk(['volume', 'create', 'fast/a', '4M']);
    d.cliOk(['snap', 'create', 'fast/a@s']);
    // A quota below what is provisioned is taken, and the CLI says what it means.
    expect(d.cliOk(['pool', 'quota', 'fast', '2M']).stdout).toBe(
      "Pool 'fast' quota set to 2 MiB.\nIts volumes already provision 4 MiB, above the quota: they keep their sizes, but no volume may be created, grown or cloned in it until they are under the quota again.\n",
    );
    d.cliFails(['volume', 'create', 'fast/b', '1M'], 1, /\[LIMIT_EXCEEDED\]/);
    expect(d.cliOk(['pool', 'quota', 'fast', '1G']).stdout).toBe("Pool 'fast' quota set to 1 GiB.\n");
    const du = d.cliOk(['pool', 'du', 'fast']).stdout.split('\n');
    expect(du[0]).toMatch(/^NAME +PROVISIONED +USED$/);
    expect(du).toContainEqual(expect.stringMatching(/^fast\/a@s +4 MiB +\d/));
    expect(du).toContainEqual(expect.stringMatching(/^fast\/a +4 MiB +\d/));
    expect(du).toContainEqual(expect.stringMatching(/^<TOTAL> +4 MiB +\d/));
    expect(d.json(['pool', 'du', 'fast']).map((e: { name: string }) => e.name).sort()).toEqual(['fast/a', 'fast/a@s']);
    d.cliFails(['pool', 'du', 'nope'], 3, /NOT_FOUND/);

    d.cliFails(['pool', 'delete', 'fast'], 4, /cannot delete pool 'fast': .*volume.*\[BUSY\]/);
    d.cliOk(['volume', 'delete', 'fast/a', '--now', '--force']);
    expect(d.cliOk(['pool', 'delete', 'fast']).stdout).toBe("Pool 'fast' deleted.\n");
    d.cliFails(['pool', 'delete', 'fast'], 3, /NOT_FOUND/);
  });

  it('volume create, list, info, resize, rename and delete', () => {
    expect(d.cliOk(['volume', 'create', 'v1', '10G']).stdout).toBe("Volume 'default/v1' created (10 GiB).\n");
    expect(d.json(['volume', 'create', 'slow/v2', '1536k'])).toMatchObject({ pool: 'slow', name: 'v2', provisionedBytes: 1536 * 1024, chainDepth: 1, parent: null });
    d.cliFails(['volume', 'create', 'v1', '1G'], 4, /volume 'default\/v1' already exists \[ALREADY_EXISTS\]/);
    d.cliFails(['volume', 'create', 'v3', 'huge'], 2, /size 'huge' is not a size/);
    d.cliFails(['volume', 'create', 'v3', '0'], 2, /the size must be more than 0/);
    d.cliFails(['volume', 'create', 'v3', '1000'], 2, /size '1000' is not a multiple of 512 bytes \(a volume is made of 512-byte sectors/);
    d.cliFails(['volume', 'create', 'nope/v3', '1M'], 3, /pool 'nope' does not exist/);
    d.cliFails(['volume', 'create', 'v3'], 2, /missing SIZE/);
    d.cliOk(['pool', 'quota', 'slow', '2M']);
    d.cliFails(['volume', 'create', 'slow/v3', '1M'], 1, /quota.*\[LIMIT_EXCEEDED\]/, /raise the quota with 'strata pool quota slow SIZE'/);
    d.cliOk(['pool', 'quota', 'slow', 'none']);

    const list = d.cliOk(['volume', 'list']).stdout.split('\n');
    expect(list[0]).toMatch(/^POOL +NAME +SIZE +ALLOCATED +SNAPSHOTS +DEPTH +PARENT$/);
    expect(list).toContainEqual(expect.stringMatching(/^default +v1 +10 GiB +\S+( \S+)? +0 +1 +-$/));
    expect(list.join('\n')).not.toMatch(/v2/);
    expect(d.json(['volume', 'list', 'slow']).map((v: { name: string }) => v.name)).toEqual(['v2']);
    expect(d.json(['volume', 'list', '--all']).map((v: { name: string }) => v.name).sort()).toEqual(expect.arrayContaining(['v1', 'v2']));
    d.cliFails(['volume', 'list', 'slow', '--all'], 2, /give a POOL or --all, not both/);
    d.cliFails(['volume', 'list', 'nope'], 3, /NOT_FOUND/);

    const info = d.cliOk(['volume', 'info', 'default/v1']).stdout;
    expect(info).toMatch(/^volume +default\/v1$/m);
    expect(info).toMatch(/^size +10 GiB \(10737418240 bytes\)$/m);
    expect(info).toMatch(/^location +\/.*\.qcow2$/m);
    const active = d.json(['volume', 'info', 'v1']).location as string;
    const qinfo = JSON.parse(qemuImg(['info', '-U', '--output=json', active]).stdout) as { 'virtual-size': number; format: string };
    expect(qinfo).toMatchObject({ format: 'qcow2', 'virtual-size': 10 * 2 ** 30 });
    d.cliFails(['volume', 'info', 'gone'], 3, /volume 'default\/gone' does not exist \[NOT_FOUND\]/, /strata volume list/);

    expect(d.cliOk(['volume', 'resize', 'v1', '+1G']).stdout).toBe("Volume 'default/v1' resized to 11 GiB.\n");
    expect(d.json(['volume', 'resize', 'v1', '12G']).provisionedBytes).toBe(12 * 2 ** 30);
    d.cliFails(['volume', 'resize', 'v1', '-2G'], 1, /shrink/i);
    expect(d.cliOk(['volume', 'resize', 'v1', '-2G', '--shrink']).stdout).toBe("Volume 'default/v1' resized to 10 GiB.\n");
    d.cliFails(['volume', 'resize', 'v1', '-20G', '--shrink'], 2, /leaves nothing/);
    d.cliFails(['volume', 'resize', 'v1'], 2, /missing SIZE/);
    d.cliFails(['volume', 'resize', 'gone', '1G'], 3, /NOT_FOUND/);

    expect(d.cliOk(['volume', 'rename', 'v1', 'big']).stdout).toBe("Volume 'default/v1' renamed to 'default/big'.\n");
    expect(d.json(['volume', 'rename', 'default/big', 'default/v1']).name).toBe('v1');
    d.cliFails(['volume', 'rename', 'v1', 'slow/v1'], 2, /cannot be renamed into another pool/, /strata volume copy/);
    d.cliFails(['volume', 'rename', 'v1', 'slow/v2'], 2, /another pool/);
    d.cliOk(['volume', 'create', 'other', '1M']);
    d.cliFails(['volume', 'rename', 'v1', 'other'], 4, /already exists/);
    d.cliFails(['volume', 'rename', 'gone', 'x'], 3, /NOT_FOUND/);
    expect(active).toBe(d.json(['volume', 'info', 'v1']).location);

    d.cliOk(['snap', 'create', 'other@s1']);
    d.cliFails(['volume', 'delete', 'other', '--now'], 4, /\[BUSY\]/);
    d.cliFails(['volume', 'delete', 'other', '--force'], 2, /--force goes with --now/);
    expect(d.cliOk(['volume', 'delete', 'other', '--now', '--force']).stdout).toBe("Volume 'default/other' deleted.\n");
    expect(d.cliOk(['volume', 'delete', 'v1', '--now']).stdout).toBe("Volume 'default/v1' deleted.\n");
    d.cliFails(['volume', 'delete', 'v1'], 3, /NOT_FOUND/);
  });

  it('volume import and export: files and stdin/stdout, raw and qcow2, progress bars, refusals', () => {
    const size = 6 << 20;
    const image = writeRawImage(f('in.raw'), size, [
      { offset: 0, data: patternBytes(1 << 20, 11) },
      { offset: 3 << 20, data: patternBytes(512 << 10, 12) },
    ]);
    let r = d.cliOk(['volume', 'import', f('in.raw'), 'imp', '-p']);
    expect(r.stdout).toMatch(/^Imported '.*in\.raw' \(raw\) into volume 'default\/imp' \(6 MiB, [\d.]+ \S+ allocated\)\.$/m);
    expect(r.stderr).toMatch(/importing \[#+\] 100% +6 MiB \/ 6 MiB/);
    d.cliFails(['volume', 'import', f('in.raw'), 'imp'], 4, /cannot import .* into volume 'default\/imp': .*already exists \[ALREADY_EXISTS\]/);
    d.cliFails(['volume', 'import', f('missing.raw'), 'imp2'], 3, /cannot read '.*missing\.raw': no such file/);
    d.cliFails(['volume', 'import', tmp.path, 'imp2'], 2, /is a directory/);
    d.cliFails(['volume', 'import', f('in.raw'), 'imp2', '--format', 'vmdk'], 2, /--format must be raw or qcow2/);
    d.cliFails(['volume', 'import', f('in.raw')], 2, /missing VOLUME/);

    // stdin, and qcow2 detected from its magic.
    r = d.cliOk(['volume', 'import', '-', 'fromstdin'], { input: image });
    expect(r.stdout).toMatch(/Imported stdin \(raw\) into volume 'default\/fromstdin'/);
    expect(qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', f('in.raw'), f('in.qcow2')]).code).toBe(0);
    expect(d.cliOk(['volume', 'import', f('in.qcow2'), 'fromqcow']).stdout).toMatch(/\(qcow2\)/);
    expect(d.cliOk(['volume', 'import', '-', 'qcowstdin'], { input: readFileSync(f('in.qcow2')) }).stdout).toMatch(/stdin \(qcow2\)/);
    // --size grows a raw import.
    expect(d.json(['volume', 'import', f('in.raw'), 'sized', '--size', '8M']).provisionedBytes).toBe(8 << 20);

    for (const vol of ['imp', 'fromstdin', 'fromqcow', 'qcowstdin']) {
      const out = f(`${vol}.out`);
      r = d.cliOk(['volume', 'export', vol, out, '-p']);
      expect(r.stdout).toBe(`Exported '${vol}' to '${out}' (raw, 6 MiB).\n`);
      expect(r.stderr).toMatch(/exporting \[#+\] 100%/);
      expect(qemuImg(['compare', '-f', 'raw', '-F', 'raw', f('in.raw'), out]).code).toBe(0);
      // The export is sparse: the zero ranges are holes.
      expect(statSync(out).blocks * 512).toBeLessThan(size);
    }
    d.cliFails(['volume', 'export', 'imp', f('imp.out')], 4, /'.*imp\.out' already exists/, /--force/);
    expect(d.cli(['volume', 'export', 'imp', f('imp.out'), '--force']).code).toBe(0);
    const stdoutCopy = d.cliBytes(['volume', 'export', 'imp', '-']);
    expect(stdoutCopy.code).toBe(0);
    expect(stdoutCopy.stdout.equals(image)).toBe(true);
    d.cliOk(['volume', 'export', 'imp', f('imp.qcow2'), '--format', 'qcow2']);
    expect(qemuImg(['check', f('imp.qcow2')]).code).toBe(0);
    expect(qemuImg(['compare', '-f', 'qcow2', '-F', 'raw', f('imp.qcow2'), f('in.raw')]).code).toBe(0);
    d.cliFails(['volume', 'export', 'gone', f('x.raw')], 3, /NOT_FOUND/);
    d.cliFails(['volume', 'export', 'imp@nosnap', f('x.raw')], 3, /NOT_FOUND/);
    d.cliFails(['volume', 'export', 'imp', f('x.raw'), '--format', 'vhd'], 2, /--format must be raw or qcow2/);
    expect(() => statSync(f('x.raw'))).toThrow();
  });

  it('volume copy, du, flatten, diff, export-diff and import-diff', () => {
    const size = 4 << 20;
    const base = writeRawImage(f('base.raw'), size, [{ offset: 1 << 20, data: patternBytes(1 << 20, 21) }]);
    d.cliOk(['volume', 'import', f('base.raw'), 'src']);
    let r = d.cliOk(['volume', 'copy', 'src', 'slow/dst', '-p']);
    expect(r.stdout).toMatch(/^Volume 'default\/src' copied to 'slow\/dst' \(.*copied\)\.$/m);
    expect(r.stderr).toMatch(/copying \[#+\] 100%/);
    d.cliOk(['volume', 'export', 'slow/dst', f('dst.raw')]);
    expect(readFileSync(f('dst.raw')).equals(base)).toBe(true);
    d.cliFails(['volume', 'copy', 'src', 'slow/dst'], 4, /already exists/);
    d.cliFails(['volume', 'copy', 'gone', 'x'], 3, /NOT_FOUND/);
    const job = d.json(['volume', 'copy', 'src', 'copy2', '--no-wait']);
    expect(job).toMatchObject({ kind: 'copy', id: expect.any(String) });
    d.cliOk(['job', 'watch', job.id]);

    const du = d.json(['volume', 'du', 'src']);
    expect(du).toEqual([expect.objectContaining({ name: 'default/src', provisionedBytes: size })]);
    expect(d.cliOk(['volume', 'du', 'src']).stdout).toMatch(/^<TOTAL> +4 MiB/m);
    d.cliFails(['volume', 'du', 'gone'], 3, /NOT_FOUND/);

    d.cliFails(['volume', 'flatten', 'src'], 4, /not a clone; .*\[BUSY\]/);
    d.cliFails(['volume', 'flatten', 'gone'], 3, /NOT_FOUND/);
    d.cliOk(['snap', 'create', 'src@base']);
    d.cliOk(['snap', 'protect', 'src@base']);
    d.cliOk(['snap', 'clone', 'src@base', 'child']);
    expect(d.json(['volume', 'info', 'child']).parent).toEqual({ pool: 'default', volume: 'src', snapshot: 'base' });
    r = d.cliOk(['volume', 'flatten', 'child', '-p']);
    expect(r.stdout).toBe("Volume 'default/child' flattened.\n");
    expect(r.stderr).toMatch(/flattening \[#+\] 100%/);
    expect(d.json(['volume', 'info', 'child'])).toMatchObject({ parent: null, chainDepth: 1 });

    // Change the volume through a diff stream, snapshot, then diff and ship the changes.
    const change = patternBytes(128 << 10, 22);
    writeFileSync(f('change.diff'), diffStream(size, 'base', 'next', [
      { kind: 'd', offset: 0, data: change },
      { kind: 'z', offset: 1 << 20, length: 64 << 10 },
    ]));
    r = d.cliOk(['volume', 'import-diff', f('change.diff'), 'src', '-p']);
    expect(r.stdout).toBe(`Applied the diff '${f('change.diff')}' to volume 'default/src' (2 snapshots now).\n`);
    expect(r.stderr).toMatch(/importing diff \[#+\] 100%/);
    const extents = d.json(['volume', 'diff', 'src', '--from', 'base', '--to', 'next']) as Array<{ offset: number; length: number; kind: string }>;
    expect(extents.some((e) => e.kind === 'data' && e.offset <= 0 && e.offset + e.length >= 128 << 10)).toBe(true);
    expect(extents.some((e) => e.kind === 'zero' && e.offset <= 1 << 20 && e.offset + e.length >= (1 << 20) + (64 << 10))).toBe(true);
    const diffTable = d.cliOk(['volume', 'diff', 'src', '--from', 'base']).stdout.split('\n');
    expect(diffTable[0]).toMatch(/^OFFSET +LENGTH +TYPE$/);
    expect(diffTable).toContainEqual(expect.stringMatching(/^0 +\d+ +data$/));
    d.cliFails(['volume', 'diff', 'src', '--from', 'nope'], 3, /NOT_FOUND/);
    d.cliFails(['volume', 'diff', 'src', '--from', 'bad@name'], 2, /not a valid snapshot name/);

    // export-diff from src, import-diff into the copy made before the change (which has 'base').
    r = d.cliOk(['volume', 'export-diff', 'src', '--from', 'base', '--to', 'next', f('ship.diff'), '-p']);
    expect(r.stdout).toMatch(/^Exported the diff of 'default\/src' \(base to next\) to '.*ship\.diff'/);
    d.cliFails(['volume', 'export-diff', 'src', '--from', 'base', f('ship.diff')], 4, /already exists/);
    d.cliFails(['volume', 'import-diff', f('ship.diff'), 'slow/dst'], 3, /snapshot.*base.*\[NOT_FOUND\]/);
    d.cliOk(['snap', 'create', 'slow/dst@base']);
    d.cliOk(['volume', 'import-diff', '-', 'slow/dst'], { input: readFileSync(f('ship.diff')) });
    d.cliOk(['volume', 'export', 'slow/dst@next', f('dst-next.raw')]);
    d.cliOk(['volume', 'export', 'src@next', f('src-next.raw')]);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'raw', f('dst-next.raw'), f('src-next.raw')]).code).toBe(0);
    d.cliFails(['volume', 'import-diff', f('ship.diff'), 'slow/dst'], 4, /snapshot 'slow\/dst@next' already exists/);
    writeFileSync(f('garbage.diff'), 'not a diff\n');
    d.cliFails(['volume', 'import-diff', f('garbage.diff'), 'src'], 1, /invalid diff stream.*\[INVALID_ARGUMENT\]/);
    // The whole history as a stream, to stdout.
    const full = d.cliBytes(['volume', 'export-diff', 'src', '-']);
    expect(full.code).toBe(0);
    expect(full.stdout.subarray(0, 40).toString('latin1')).toMatch(/^\{"format":"strata-diff","version":1/);
  });
});

/**
 * Unit tests of what the daemon commands print: the progress bar's rate, size arguments, error
 * fixes in each interface's words, the --json error object, and the location row of details.
 */
import { describe, expect, it } from 'vitest';
import { restHint } from '../../src/api/rest/fixes.js';
import { poolJson, snapshotJson, volumeJson } from '../../src/api/rest/schemas.js';
import { parseArgs } from '../../src/cli/args.js';
import { CliError, UsageError, describeFailure, failureJson, failureLine } from '../../src/cli/errors.js';
import type { Console } from '../../src/cli/output.js';
import { apiError } from '../../src/cli/remote/client.js';
import { VOLUME_SIZE_LIMIT, keyValues, locationRow, parseSize } from '../../src/cli/remote/common.js';
import { cliHint, parseFix } from '../../src/cli/remote/fixes.js';
import { MIN_RATE_WINDOW_MS, ProgressBar, RateEstimator, type BarHost } from '../../src/cli/remote/progress-bar.js';
import { StorageError, type ErrorFix } from '../../src/core/errors.js';
import { countOf } from '../../src/core/text.js';
import { GiB, MiB, PiB } from '../../src/core/units.js';

/** A console that keeps stderr, a clock the test moves, and a Ctrl-C the test presses. */
function fakeHost(): { con: Console; err: () => string; host: BarHost; advance: (ms: number) => void; interrupt: () => void; trapped: () => boolean } {
  let stderr = '';
  let now = 1_000_000;
  let handler: (() => void) | undefined;
  return {
    con: { stdout: () => {}, stderr: (t) => (stderr += t) },
    err: () => stderr,
    host: {
      nowMs: () => now,
      trapInterrupt: (onInterrupt) => {
        handler = onInterrupt;
        return () => (handler = undefined);
      },
    },
    advance: (ms) => (now += ms),
    interrupt: () => handler?.(),
    trapped: () => handler !== undefined,
  };
}

describe('progress bar rate', () => {
  it('shows no rate until it has measured one, then the rate of the progress made between samples', () => {
    const h = fakeHost();
    // `job watch` of a job already 5 GiB in: that is not 5 GiB over the first millisecond.
    const bar = new ProgressBar(h.con, true, 'copy', 10 * GiB, h.host);
    bar.update(5 * GiB);
    expect(h.err()).toBe(`\r  copy [${'#'.repeat(15)}${'.'.repeat(15)}]  50%  5 GiB / 10 GiB\x1b[K`);
    h.advance(500);
    bar.update(5 * GiB + 50 * MiB);
    expect(h.err()).not.toMatch(/\/s/);
    h.advance(MIN_RATE_WINDOW_MS - 500);
    bar.update(5 * GiB + 100 * MiB);
    expect(h.err()).toMatch(/5\.098 GiB \/ 10 GiB {2}100 MiB\/s\x1b\[K$/);
    bar.finish();
    expect(h.err()).toMatch(/100% {2}10 GiB \/ 10 GiB {2}\S+ GiB\/s\x1b\[K\n$/);
  });

  it('measures over a sliding window: it follows a change of pace', () => {
    const rate = new RateEstimator();
    for (let s = 0; s <= 10; s++) rate.sample(s * 1000, s * 100 * MiB);
    expect(rate.bytesPerSecond()).toBe(100 * MiB);
    for (let s = 11; s <= 20; s++) rate.sample(s * 1000, 1000 * MiB + (s - 10) * 10 * MiB);
    expect(rate.bytesPerSecond()).toBe(10 * MiB);
    expect(new RateEstimator().bytesPerSecond()).toBeUndefined();
  });

  it('Ctrl-C ends the progress line, once; a finished bar stops listening', () => {
    const h = fakeHost();
    const bar = new ProgressBar(h.con, true, 'importing', undefined, h.host);
    expect(h.trapped()).toBe(false);
    bar.add(MiB);
    expect(h.trapped()).toBe(true);
    h.interrupt();
    expect(h.err()).toBe('\r  importing 1 MiB\x1b[K\n');
    bar.abort();
    expect(h.err()).toBe('\r  importing 1 MiB\x1b[K\n');
    const other = fakeHost();
    const done = new ProgressBar(other.con, true, 'x', 1, other.host);
    done.update(1);
    done.finish();
    expect(other.trapped()).toBe(false);
  });
});

describe('size arguments', () => {
  const sizeError = (text: string, limit = VOLUME_SIZE_LIMIT): string => {
    try {
      parseSize(text, 'size', 'volume create', limit);
    } catch (err) {
      return failureLine(describeFailure(err, 2));
    }
    throw new Error(`'${text}' was accepted`);
  };

  it('reads sizes up to the limit and says the limit past it, also past the safe integers', () => {
    expect(parseSize('1P', 'size', 'volume create', VOLUME_SIZE_LIMIT)).toBe(PiB);
    expect(sizeError('2P')).toBe("strata: volume create: size '2P' is too large (the largest volume is 1 PiB)");
    expect(sizeError('8P')).toBe("strata: volume create: size '8P' is too large (the largest volume is 1 PiB)");
    expect(sizeError('99999999999999999999')).toMatch(/is too large \(the largest volume is 1 PiB\)$/);
    expect(parseSize('7P', 'quota', 'pool quota')).toBe(7 * PiB);
    expect(() => parseSize('8P', 'quota', 'pool quota')).toThrow(/quota '8P' is too large/);
  });

  it('says what a fraction that is not whole bytes comes to, and a whole size near it', () => {
    expect(parseSize('1.5G', 'size', 'volume create', VOLUME_SIZE_LIMIT)).toBe(1.5 * GiB);
    expect(parseSize('0.5k', 'size', 'volume create', VOLUME_SIZE_LIMIT)).toBe(512);
    expect(sizeError('1.3G')).toBe("strata: volume create: size '1.3G' is 1395864371.2 bytes, not a whole number (give a whole number of bytes or a unit that makes one, e.g. 1331M)");
    // Exact decimals, not floating point: 0.1P is 112589990684262.4 bytes.
    expect(sizeError('0.1P')).toMatch(/size '0\.1P' is 112589990684262\.4 bytes, not a whole number \(.*e\.g\. 102T\)$/);
    // The suggestion is a size the command takes: whole sectors for a volume, whole bytes for a quota.
    expect(sizeError('1.3k')).toMatch(/is 1331\.2 bytes, not a whole number \(.*e\.g\. 1536\)$/);
    expect(sizeError('1.3k', { maxBytes: PiB, name: 'the largest quota' })).toMatch(/e\.g\. 1331\)$/);
    expect(sizeError('1000.5')).toMatch(/is 1000\.5 bytes, not a whole number \(.*e\.g\. 1k\)$/);
  });

  it('volume sizes are whole 512-byte sectors; other sizes need not be', () => {
    expect(sizeError('1000')).toBe("strata: volume create: size '1000' is not a multiple of 512 bytes (a volume is made of 512-byte sectors: give e.g. 512 or 1k)");
    expect(sizeError('100')).toMatch(/give e\.g\. 512\)$/);
    expect(parseSize('1536k', 'size', 'volume create', VOLUME_SIZE_LIMIT)).toBe(1536 * 1024);
    expect(parseSize('1000', 'quota', 'pool quota')).toBe(1000);
  });

  it('says a negative size is negative, and what is not a size', () => {
    expect(sizeError('-5G')).toBe("strata: volume create: size '-5G' is negative; it must be positive (give a size like 10G)");
    expect(sizeError('12X')).toMatch(/size '12X' is not a size \(use bytes or a k, M, G, T, P suffix/);
    expect(sizeError('-x')).toMatch(/size '-x' is not a size/);
  });

  it('the daemon commands read "-5G" as an argument, not as options', () => {
    expect(parseArgs(['v', '-5G'], [{ short: 'f' }], 'volume resize', { negativeNumbers: true }).positionals).toEqual(['v', '-5G']);
    expect(() => parseArgs(['v', '-5G'], [{ short: 'f' }], 'img t')).toThrow(/unknown option '-5'/);
  });

  it('counts agree in number', () => {
    expect([countOf(0, 'snapshot'), countOf(1, 'snapshot'), countOf(2, 'snapshot')]).toEqual(['0 snapshots', '1 snapshot', '2 snapshots']);
  });
});

describe('error fixes, in the words of each interface', () => {
  const fixes: ErrorFix[] = [
    { option: 'allowShrink', text: 'pass {} to shrink it anyway' },
    { option: 'force', text: 'or pass {}' },
    { option: 'sizeBytes', text: 'give {}' },
    { operation: 'protectSnapshot', pool: 'p', volume: 'v', snapshot: 's', text: 'protect it first with {}' },
    { operation: 'unprotectSnapshot', pool: 'p', volume: 'v', snapshot: 's', text: '{}' },
    { operation: 'setPoolQuota', pool: 'p', text: '{}' },
    { operation: 'setSnapshotLimit', pool: 'p', volume: 'v', text: '{}' },
    { operation: 'removeFromGroup', group: 'g', pool: 'p', volume: 'v', text: 'remove it with {} first' },
    { operation: 'deleteGroupSnapshot', group: 'g', snapshot: 's', text: '{}' },
    {
      operation: 'stopExports',
      exports: [
        { id: 'e1', type: 'nbd', pool: 'p', volume: 'v' },
        { id: 'e2', type: 'nbd', pool: 'p', volume: 'v' },
        { id: 'e3', type: 'nbd', pool: 'p', volume: 'v', snapshot: 's' },
      ],
      text: 'stop them with {}',
    },
    { operation: 'stopExports', exports: [{ id: 'e4', type: 'vhost-user', pool: 'p', volume: 'v' }, { id: 'e5', type: 'nbd', pool: 'q', volume: 'w' }], text: '{}' },
    { operation: 'stopExports', exports: [], text: '{}' },
    { operation: 'listPools', text: 'check the name; {} lists the pools' },
    { operation: 'listVolumes', pool: 'p', text: '{}' },
    { operation: 'listSnapshots', pool: 'p', volume: 'v', text: '{}' },
    { operation: 'listTrash', pool: 'p', text: '{}' },
    { operation: 'listJobs', text: 'check the id; {} lists the jobs' },
    { operation: 'listExports', text: '{}' },
    { operation: 'listGroups', text: '{}' },
    { operation: 'listGroupSnapshots', group: 'g', text: '{}' },
    { option: 'purge', text: 'pass {} to delete all of it with the bucket' },
    { operation: 'listUsers', text: 'check the name; {} lists the users' },
    { operation: 'listBuckets', text: '{}' },
    { operation: 'removeBuckets', buckets: ['photos'], text: 'give it to another user or delete it: {}' },
    { operation: 'removeBuckets', buckets: ['a', 'b'], text: '{}' },
  ];

  it('the CLI names its flags and commands, the REST API its fields and routes', () => {
    expect(fixes.map(cliHint)).toEqual([
      'pass --shrink to shrink it anyway',
      'or pass --force',
      'give --size SIZE',
      "protect it first with 'strata snap protect p/v@s'",
      "'strata snap unprotect p/v@s'",
      "'strata pool quota p SIZE'",
      "'strata snap limit p/v N'",
      "remove it with 'strata group remove g p/v' first",
      "'strata group snap delete g@s'",
      // Two NBD exports of the head stop with one command; a snapshot's with its own.
      "stop them with 'strata volume unexport-nbd p/v' and 'strata volume unexport-nbd p/v@s'",
      "'strata volume detach p/v' and 'strata volume unexport-nbd q/w'",
      "'strata volume unexport-nbd' or 'strata volume detach' ('strata volume exports' lists them)",
      "check the name; 'strata pool list' lists the pools",
      "'strata volume list p'",
      "'strata snap list p/v'",
      "'strata trash list p'",
      "check the id; 'strata job list' lists the jobs",
      "'strata volume exports'",
      "'strata group list'",
      "'strata group snap list g'",
      'pass --purge to delete all of it with the bucket',
      "check the name; 'strata user list' lists the users",
      "'strata bucket list'",
      "give it to another user or delete it: 'strata bucket chown photos USER' or 'strata bucket delete photos --purge'",
      "'strata bucket chown BUCKET USER' or 'strata bucket delete BUCKET --purge'",
    ]);
    expect(fixes.map(restHint)).toEqual([
      'pass "allowShrink": true to shrink it anyway',
      'or pass ?force=true',
      'give ?sizeBytes=N',
      'protect it first with PATCH /v1/pools/p/volumes/v/snapshots/s {"protected": true}',
      'PATCH /v1/pools/p/volumes/v/snapshots/s {"protected": false}',
      'PATCH /v1/pools/p {"quotaBytes": N}',
      'PATCH /v1/pools/p/volumes/v {"snapshotLimit": N}',
      'remove it with DELETE /v1/groups/g/members/p/v first',
      'DELETE /v1/groups/g/snapshots/s',
      'stop them with DELETE /v1/exports/e1 and DELETE /v1/exports/e2 and DELETE /v1/exports/e3',
      'DELETE /v1/exports/e4 and DELETE /v1/exports/e5',
      'DELETE /v1/exports/{id} (GET /v1/exports lists them)',
      'check the name; GET /v1/pools lists the pools',
      'GET /v1/pools/p/volumes',
      'GET /v1/pools/p/volumes/v/snapshots',
      'GET /v1/pools/p/trash',
      'check the id; GET /v1/jobs lists the jobs',
      'GET /v1/exports',
      'GET /v1/groups',
      'GET /v1/groups/g/snapshots',
      'pass ?purge=true to delete all of it with the bucket',
      'check the name; GET /v1/users lists the users',
      'GET /v1/buckets',
      'give it to another user or delete it: PATCH /v1/buckets/photos {"owner": "USER"} or DELETE /v1/buckets/photos?purge=true',
      'PATCH /v1/buckets/{bucket} {"owner": "USER"} or DELETE /v1/buckets/{bucket}?purge=true',
    ]);
  });

  it('the CLI takes back what the daemon sent, and ignores fixes it does not know', () => {
    for (const fix of fixes) expect(parseFix(JSON.parse(JSON.stringify(fix)))).toEqual(fix);
    expect(parseFix({ option: 'compress', text: '{}' })).toBeUndefined();
    expect(parseFix({ operation: 'reboot', pool: 'p', text: '{}' })).toBeUndefined();
    expect(parseFix({ operation: 'protectSnapshot', pool: 'p', text: '{}' })).toBeUndefined();
    expect(parseFix('pass --shrink')).toBeUndefined();
    expect(parseFix({ operation: 'deleteGroupSnapshot', group: 'g', text: '{}' })).toBeUndefined();
    expect(parseFix({ operation: 'removeFromGroup', group: 'g', pool: 'p', text: '{}' })).toBeUndefined();
    expect(parseFix({ operation: 'stopExports', text: '{}' })).toBeUndefined();
    expect(parseFix({ operation: 'stopExports', exports: [{ id: 'e', type: 'iscsi', pool: 'p', volume: 'v' }], text: '{}' })).toBeUndefined();
    expect(parseFix({ operation: 'stopExports', exports: [{ id: 'e', type: 'nbd', pool: 'p' }], text: '{}' })).toBeUndefined();
    expect(parseFix({ operation: 'listSnapshots', pool: 'p', text: '{}' })).toBeUndefined();
    expect(parseFix({ operation: 'listVolumes', text: '{}' })).toBeUndefined();
    expect(parseFix({ operation: 'listGroupSnapshots', text: '{}' })).toBeUndefined();
    expect(parseFix({ operation: 'removeBuckets', buckets: [], text: '{}' })).toBeUndefined();
    expect(parseFix({ operation: 'removeBuckets', buckets: [3], text: '{}' })).toBeUndefined();
  });

  it('API errors without a fix get a hint that holds for any of their kind', () => {
    // The daemon names the job list when a job holds a volume, and the list of the kind of thing not found.
    expect(failureLine(describeFailure(apiError('BUSY', 'busy')))).not.toMatch(/job/);
    expect(failureLine(describeFailure(apiError('NOT_FOUND', "group 'g' does not exist")))).not.toMatch(/pool list|volume list|snap list/);
  });

  it('a StorageError with a fix shows the CLI hint on its line', () => {
    const err = new StorageError('INVALID_ARGUMENT', 'shrinking loses data', { fix: fixes[0] });
    expect(failureLine(describeFailure(err))).toBe('strata: shrinking loses data [INVALID_ARGUMENT] (pass --shrink to shrink it anyway)');
  });
});

describe('the --json error object', () => {
  it('has code, message, hint and exitCode for API errors, usage errors and the CLI own failures', () => {
    expect(failureJson(describeFailure(apiError('NOT_FOUND', "cannot show volume 'p/v': gone", 'look')))).toEqual({
      error: { code: 'NOT_FOUND', message: "cannot show volume 'p/v': gone", hint: 'look', exitCode: 3 },
    });
    expect(failureJson(describeFailure(apiError('INTERNAL', 'boom')))).toMatchObject({ error: { code: 'INTERNAL', exitCode: 1 } });
    expect(failureLine(describeFailure(apiError('INTERNAL', 'boom')))).toMatch(/^strata: boom \[INTERNAL\] \(/);
    expect(failureJson(describeFailure(new UsageError('volume create: missing SIZE', 'see help'), 2))).toEqual({
      error: { code: 'USAGE', message: 'volume create: missing SIZE', hint: 'see help', exitCode: 2 },
    });
    expect(failureJson(describeFailure(new CliError('odd', { exitCode: 1 })))).toEqual({ error: { code: null, message: 'odd', hint: null, exitCode: 1 } });
  });

  it('an UNAVAILABLE (a pool tier that did not answer) has its own exit status and says to check the S3 server, then retry', () => {
    const failure = describeFailure(apiError('UNAVAILABLE', 'S3 GET range of "packs/p" failed after 8 attempts: check that the S3 server at http://s3:9000 is running and reachable'));
    expect(failureJson(failure)).toMatchObject({ error: { code: 'UNAVAILABLE', exitCode: 6 } });
    expect(failureLine(failure)).toMatch(/\[UNAVAILABLE\] \(a service the data depends on did not answer: check the S3 server the message names, then run the command again\)$/);
  });
});

describe('location', () => {
  it('is null in the JSON and has no row in the details when the store has no local files', () => {
    const pool = { name: 'p', quotaBytes: undefined, volumeCount: 0, provisionedBytes: 0, allocatedBytes: 0, kind: 'local' as const, dedup: undefined, createdAt: 't' };
    expect(poolJson(pool).location).toBeNull();
    expect(poolJson({ ...pool, location: '/data/pools/p' }).location).toBe('/data/pools/p');
    const volume = { id: 'i', pool: 'p', name: 'v', provisionedBytes: 0, allocatedBytes: 0, snapshotCount: 0, parent: undefined, chainDepth: 1, snapshotLimit: undefined, createdAt: 't' };
    expect(volumeJson(volume).location).toBeNull();
    expect(snapshotJson({ id: 'i', pool: 'p', volume: 'v', name: 's', sizeBytes: 0, protected: false, children: [], createdAt: 't' }).location).toBeNull();
    expect(keyValues([['pool', 'p'], ...locationRow(null), ['volumes', '0']])).toBe('pool     p\nvolumes  0\n');
    expect(keyValues([['pool', 'p'], ...locationRow('/data/pools/p')])).toBe('pool      p\nlocation  /data/pools/p\n');
  });
});

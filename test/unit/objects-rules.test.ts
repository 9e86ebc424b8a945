/** The object model's pure rules: names, checksums, conditional requests, ranges. */
import { describe, expect, it } from 'vitest';
import { checksumOf, compositeChecksum, runningChecksum, CHECKSUM_ALGORITHMS } from '../../src/objects/checksums.js';
import { evaluateConditions, parseEtagList } from '../../src/objects/conditions.js';
import { isObjectError } from '../../src/objects/errors.js';
import { bucketNameProblem, checkObjectKey } from '../../src/objects/names.js';
import { parseRangeHeader, resolveRange } from '../../src/objects/range.js';
import { afterEveryStartingWith } from '../../src/objects/rollup.js';

describe('bucket names', () => {
  it.each(['abc', 'my-bucket.example', 'a'.repeat(63), '1bucket', 'b-1.2'])('accepts %s', (name) => {
    expect(bucketNameProblem(name)).toBeUndefined();
  });
  it.each([
    ['ab', /3 to 63/],
    ['a'.repeat(64), /3 to 63/],
    ['MyBucket', /lower-case/],
    ['my_bucket', /lower-case/],
    ['-bucket', /begin and end/],
    ['bucket.', /begin and end/],
    ['my..bucket', /adjacent dots/],
    ['192.168.5.4', /IP address/],
    ['xn--bucket', /reserved prefix/],
    ['sthree-x', /reserved prefix/],
    ['bucket-s3alias', /reserved suffix/],
    ['bucket--ol-s3', /reserved suffix/],
  ])('refuses %s', (name, why) => {
    expect(bucketNameProblem(name)).toMatch(why);
  });
});

describe('object keys', () => {
  it('takes 1 to 1024 UTF-8 bytes without NUL or lone surrogates', () => {
    expect(() => checkObjectKey('a/b/ü/😀')).not.toThrow();
    expect(() => checkObjectKey('x'.repeat(1024))).not.toThrow();
    for (const [key, code] of [
      ['', 'InvalidArgument'],
      ['x'.repeat(1025), 'KeyTooLongError'],
      ['ü'.repeat(513), 'KeyTooLongError'],
      ['a\0b', 'InvalidArgument'],
      ['a\u0001b', 'InvalidArgument'],
      ['a\ud800b', 'InvalidArgument'],
    ] as const) {
      let caught: unknown;
      try {
        checkObjectKey(key);
      } catch (err) {
        caught = err;
      }
      expect(isObjectError(caught, code), `${JSON.stringify(key.slice(0, 10))}`).toBe(true);
    }
  });
});

describe('checksums', () => {
  const check = Buffer.from('123456789');
  it('computes the catalogue check values of "123456789"', () => {
    const hex = (algorithm: (typeof CHECKSUM_ALGORITHMS)[number]) => Buffer.from(checksumOf(algorithm, check), 'base64').toString('hex');
    expect(hex('CRC32')).toBe('cbf43926');
    expect(hex('CRC32C')).toBe('e3069283');
    expect(hex('CRC64NVME')).toBe('ae8b14860a799888');
    expect(hex('SHA1')).toBe('f7c3bc1d808e04732adf679965ccc34ca7ae3441');
    expect(hex('SHA256')).toBe('15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225');
  });
  it('matches what the AWS SDK sent for "hello stream" (CRC32 trailer)', () => {
    expect(checksumOf('CRC32', Buffer.from('hello stream'))).toBe('gtnkmQ==');
  });
  it('gives the same value fed in pieces as in one go', () => {
    const data = Buffer.alloc(100_003, 7).map((_, i) => (i * 31) & 0xff);
    for (const algorithm of CHECKSUM_ALGORITHMS) {
      const running = runningChecksum(algorithm);
      for (let at = 0; at < data.length; at += 977) running.update(data.subarray(at, at + 977));
      expect(running.digest().toString('base64'), algorithm).toBe(checksumOf(algorithm, data));
    }
  });
  it('builds a composite checksum over the parts', () => {
    const parts = [checksumOf('SHA256', Buffer.from('a')), checksumOf('SHA256', Buffer.from('b'))];
    const expected = checksumOf('SHA256', Buffer.concat(parts.map((p) => Buffer.from(p, 'base64'))));
    expect(compositeChecksum('SHA256', parts)).toBe(`${expected}-2`);
  });
});

describe('conditional requests (RFC 9110 13.2.2)', () => {
  const target = { etag: 'abc', lastModifiedMs: Date.parse('2026-01-02T00:00:00Z') };
  const before = 'Thu, 01 Jan 2026 00:00:00 GMT';
  const after = 'Sat, 03 Jan 2026 00:00:00 GMT';
  it('parses entity tag lists', () => {
    expect(parseEtagList('"a", W/"b" ,*')).toEqual(['a', 'b', '*']);
  });
  it.each([
    [{ ifMatch: '"abc"' }, 'proceed'],
    [{ ifMatch: '"x"' }, 'precondition-failed'],
    [{ ifMatch: '*' }, 'proceed'],
    [{ ifNoneMatch: '"abc"' }, 'not-modified'],
    [{ ifNoneMatch: '"x"' }, 'proceed'],
    [{ ifModifiedSince: after }, 'not-modified'],
    [{ ifModifiedSince: before }, 'proceed'],
    [{ ifUnmodifiedSince: before }, 'precondition-failed'],
    [{ ifUnmodifiedSince: after }, 'proceed'],
    // If-Match true wins over If-Unmodified-Since false (step 2 runs only without If-Match).
    [{ ifMatch: '"abc"', ifUnmodifiedSince: before }, 'proceed'],
    // If-None-Match false wins over If-Modified-Since true.
    [{ ifNoneMatch: '"abc"', ifModifiedSince: before }, 'not-modified'],
    // If-None-Match true: If-Modified-Since is not evaluated.
    [{ ifNoneMatch: '"x"', ifModifiedSince: after }, 'proceed'],
    [{ ifModifiedSince: 'not a date' }, 'proceed'],
  ] as const)('GET %o -> %s', (headers, outcome) => {
    expect(evaluateConditions(headers, target, true)).toBe(outcome);
  });
  it('a write: If-None-Match * fails when the object exists, holds when it does not', () => {
    expect(evaluateConditions({ ifNoneMatch: '*' }, target, false)).toBe('precondition-failed');
    expect(evaluateConditions({ ifNoneMatch: '*' }, undefined, false)).toBe('proceed');
    expect(evaluateConditions({ ifMatch: '"abc"' }, undefined, false)).toBe('precondition-failed');
  });
});

describe('ranges', () => {
  it('parses and resolves the three forms', () => {
    expect(resolveRange(parseRangeHeader('bytes=0-9')!, 100)).toEqual({ startBytes: 0, endBytes: 10 });
    expect(resolveRange(parseRangeHeader('bytes=90-200')!, 100)).toEqual({ startBytes: 90, endBytes: 100 });
    expect(resolveRange(parseRangeHeader('bytes=95-')!, 100)).toEqual({ startBytes: 95, endBytes: 100 });
    expect(resolveRange(parseRangeHeader('bytes=-10')!, 100)).toEqual({ startBytes: 90, endBytes: 100 });
    expect(resolveRange(parseRangeHeader('bytes=-500')!, 100)).toEqual({ startBytes: 0, endBytes: 100 });
  });
  it('ignores what is not one bytes range and refuses what names no byte', () => {
    expect(parseRangeHeader('bytes=5-1')).toBeUndefined();
    expect(parseRangeHeader('items=0-1')).toBeUndefined();
    expect(parseRangeHeader('bytes=0-1,3-4')).toBeUndefined();
    expect(() => resolveRange({ first: 100 }, 100)).toThrow(/not satisfiable/);
    expect(() => resolveRange({ suffixLengthBytes: 0 }, 100)).toThrow(/not satisfiable/);
  });
});

describe('listing positions', () => {
  it('finds the first string past every string with a prefix', () => {
    expect(afterEveryStartingWith('a/')).toBe('a0');
    expect(afterEveryStartingWith('a\uffff')).toBe('b');
    expect(afterEveryStartingWith('\uffff')).toBeUndefined();
  });
});

/**
 * StorageError UNAVAILABLE (a service the data depends on did not answer: the same request may
 * succeed later) at each edge that maps codes, beside IO_ERROR (the host storage failed: the
 * daemon's own fault). test/e2e/tier-unavailable.test.ts shows the same through `strata serve`
 * with a real S3 tier down; this file needs no server.
 */
import { describe, expect, it } from 'vitest';
import { mapError, UNAVAILABLE_RETRY_AFTER_SECONDS } from '../../src/api/rest/errors.js';
import { toS3Error } from '../../src/api/s3/errors.js';
import { StorageError } from '../../src/core/errors.js';
import { nbdErrnoFor } from '../../src/export/nbd/transmission.js';
import { NBD_EIO } from '../../src/export/nbd/protocol.js';

const unavailable = new StorageError('UNAVAILABLE', 'S3 GET range of "packs/p" failed after 8 attempts: check that the S3 server at http://s3:9000 is running and reachable');
const ioError = new StorageError('IO_ERROR', 'pread on /data/pools/p/v.qcow2: Input/output error');

describe('UNAVAILABLE at the edges', () => {
  it('REST: 503 with Retry-After, not the daemon failing; IO_ERROR stays 500, its own fault', () => {
    expect(mapError(unavailable)).toEqual({
      status: 503,
      body: { error: { code: 'UNAVAILABLE', message: unavailable.message } },
      internal: false,
      retryAfterSeconds: UNAVAILABLE_RETRY_AFTER_SECONDS,
    });
    expect(mapError(ioError)).toMatchObject({ status: 500, internal: true });
    expect(mapError(ioError).retryAfterSeconds).toBeUndefined();
  });

  it('S3: ServiceUnavailable (503), which SDKs retry, logged as a warning; IO_ERROR stays InternalError', () => {
    const mapped = toS3Error(unavailable);
    expect({ code: mapped.error.code, status: mapped.error.status, message: mapped.error.message }).toEqual({ code: 'ServiceUnavailable', status: 503, message: unavailable.message });
    expect({ internal: mapped.internal, unavailable: mapped.unavailable }).toEqual({ internal: false, unavailable: true });
    const io = toS3Error(ioError);
    expect({ code: io.error.code, status: io.error.status, internal: io.internal, unavailable: io.unavailable }).toEqual({ code: 'InternalError', status: 500, internal: true, unavailable: false });
  });

  it('NBD: a guest sees EIO, as for any failed read', () => {
    expect(nbdErrnoFor(unavailable)).toBe(NBD_EIO);
  });
});

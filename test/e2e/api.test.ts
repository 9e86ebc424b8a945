/**
 * The REST API through fetch, as another program would use it: bearer-token auth, JSON schemas
 * (400 with the reason), the error body and status mapping, every route of docs/daemon.md in
 * the OpenAPI document, streamed import/export, job watch and cancel, and /metrics.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, requireTool } from '../support/tools.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { assertBuilt, diffStream, patternBytes, serveFails, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const V = '/v1/pools/default/volumes';

describe.skipIf(!requireTool('qemu-img'))('REST API', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };

  beforeAll(async () => {
    tmp = makeTempDir(shmBase());
    d = await startDaemon(path.join(tmp.path, 'data'));
  });
  afterAll(async () => {
    if (d) expect((await d.stop()).code).toBe(0);
    tmp?.cleanup();
  });

  async function expectError(res: Response, status: number, code: string, message?: RegExp): Promise<string> {
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect({ status: res.status, code: body.error.code }).toEqual({ status, code });
    expect(typeof body.error.message).toBe('string');
    if (message) expect(body.error.message).toMatch(message);
    return body.error.message;
  }

  it('every /v1 route needs the bearer token: 401 without it or with a wrong one; /openapi.json and (on loopback) /metrics are open', async () => {
    await expectError(await d.api('GET', '/v1/pools', { token: null }), 401, 'UNAUTHORIZED', /missing 'Authorization: Bearer <token>'/);
    await expectError(await d.api('GET', '/v1/pools', { token: 'x'.repeat(64) }), 401, 'UNAUTHORIZED', /not valid/);
    await expectError(await d.api('GET', '/v1/pools', { token: `${d.token}x` }), 401, 'UNAUTHORIZED');
    await expectError(await d.api('GET', '/v1/pools', { token: null, headers: { authorization: `Basic ${d.token}` } }), 401, 'UNAUTHORIZED');
    // Unknown /v1 routes are refused before routing (no probing without a token).
    await expectError(await d.api('GET', '/v1/nothing-here', { token: null }), 401, 'UNAUTHORIZED');
    await expectError(await d.api('GET', '/%76%31/pools', { token: null }), 401, 'UNAUTHORIZED');
    await expectError(await d.api('GET', '/v1//pools', { token: null }), 401, 'UNAUTHORIZED');
    await expectError(await d.api('PUT', `${V}/x/content`, { token: null, raw: 'abc', headers: { 'content-type': 'application/octet-stream' } }), 401, 'UNAUTHORIZED');
    const res = await d.api('GET', '/v1/pools', { token: null });
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await d.api('GET', '/openapi.json', { token: null })).status).toBe(200);
    expect((await d.api('GET', '/metrics', { token: null })).status).toBe(200);
    expect((await d.api('GET', '/v1/pools')).status).toBe(200);
  });

  it('bad input is a 400 with the reason: malformed JSON, unknown or missing properties, wrong types, bad names, bad queries', async () => {
    await expectError(await d.api('POST', '/v1/pools', { body: '{"name": ' }), 400, 'INVALID_ARGUMENT', /not valid JSON/);
    await expectError(await d.api('POST', '/v1/pools', { body: {} }), 400, 'INVALID_ARGUMENT', /must have the property 'name'/);
    await expectError(await d.api('POST', '/v1/pools', { body: { name: 'p', quota: 5 } }), 400, 'INVALID_ARGUMENT', /unknown property 'quota'/);
    await expectError(await d.api('POST', '/v1/pools', { body: { name: 'a/b' } }), 400, 'INVALID_ARGUMENT', /not a valid name/);
    await expectError(await d.api('POST', '/v1/pools', { body: { name: 'p', quotaBytes: -1 } }), 400, 'INVALID_ARGUMENT', /quotaBytes/);
    await expectError(await d.api('POST', V, { body: { name: 'v', sizeBytes: 'big' } }), 400, 'INVALID_ARGUMENT', /sizeBytes must be integer/);
    await expectError(await d.api('POST', V, { body: { name: 'v', sizeBytes: 1000 } }), 400, 'INVALID_ARGUMENT', /multiple of 512/);
    await expectError(await d.api('POST', V, { body: [1, 2] }), 400, 'INVALID_ARGUMENT');
    // JSON bodies keep their types: a string or a boolean where a number goes is refused, not coerced.
    await expectError(await d.api('POST', V, { body: { name: 'v', sizeBytes: '1048576' } }), 400, 'INVALID_ARGUMENT', /body\/sizeBytes must be integer/);
    await expectError(await d.api('POST', '/v1/qos-policies', { body: { name: 'q', limits: { readIops: true } } }), 400, 'INVALID_ARGUMENT', /body\/limits\/readIops must be integer/);
    await expectError(await d.api('POST', '/v1/pools', { body: { name: 'p', quotaBytes: '1073741824' } }), 400, 'INVALID_ARGUMENT', /body\/quotaBytes must be integer/);
    expect((await d.apiJson<{ name: string }[]>('GET', V)).map((v) => v.name)).not.toContain('v');
    expect((await d.apiJson<{ name: string }[]>('GET', '/v1/qos-policies')).map((q) => q.name)).not.toContain('q');
    expect((await d.apiJson<{ name: string }[]>('GET', '/v1/pools')).map((p) => p.name)).not.toContain('p');
    await expectError(await d.api('PATCH', `${V}/v`, { body: {} }), 400, 'INVALID_ARGUMENT', /at least one property/);
    await expectError(await d.api('GET', `${V}/v/content?format=vmdk`), 400, 'INVALID_ARGUMENT', /format/);
    await expectError(await d.api('DELETE', `${V}/v?force=maybe`), 400, 'INVALID_ARGUMENT', /force/);
    await expectError(await d.api('POST', '/v1/pools', { raw: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'INVALID_ARGUMENT', /application\/json/);
    await expectError(await d.api('POST', '/v1/pools', { raw: '{"name":"x"}', headers: { 'content-type': 'text/plain' } }), 415, 'INVALID_ARGUMENT');
    await expectError(await d.api('GET', '/v1/no-such-route'), 404, 'NOT_FOUND', /no route GET \/v1\/no-such-route/);
  });

  it('StorageError codes map to HTTP statuses once: 404, 409 (exists, busy), 422 (limits), with {error:{code,message}}', async () => {
    await expectError(await d.api('GET', '/v1/pools/nope'), 404, 'NOT_FOUND', /pool 'nope'/);
    await expectError(await d.api('GET', `${V}/nope`), 404, 'NOT_FOUND');
    await expectError(await d.api('GET', `${V}/nope/snapshots/s`), 404, 'NOT_FOUND');
    await expectError(await d.api('GET', '/v1/jobs/nope'), 404, 'NOT_FOUND');
    expect((await d.api('POST', '/v1/pools', { body: { name: 'api', quotaBytes: 1 << 20 } })).status).toBe(201);
    await expectError(await d.api('POST', '/v1/pools', { body: { name: 'api' } }), 409, 'ALREADY_EXISTS');
    expect((await d.api('POST', '/v1/pools/api/volumes', { body: { name: 'small', sizeBytes: 1 << 20 } })).status).toBe(201);
    await expectError(await d.api('POST', '/v1/pools/api/volumes', { body: { name: 'more', sizeBytes: 512 } }), 422, 'LIMIT_EXCEEDED', /quota/);
    await expectError(await d.api('DELETE', '/v1/pools/api'), 409, 'BUSY', /volume/);
    const limited = await d.apiJson('PATCH', '/v1/pools/api/volumes/small', { snapshotLimit: 1 });
    expect(limited.snapshotLimit).toBe(1);
    expect((await d.api('POST', '/v1/pools/api/volumes/small/snapshots', { body: { name: 's1' } })).status).toBe(201);
    await expectError(await d.api('POST', '/v1/pools/api/volumes/small/snapshots', { body: { name: 's2' } }), 422, 'LIMIT_EXCEEDED', /limit/);
    await d.apiJson('PATCH', '/v1/pools/api/volumes/small/snapshots/s1', { protected: true });
    await expectError(await d.api('DELETE', '/v1/pools/api/volumes/small/snapshots/s1'), 409, 'BUSY', /protected/);
    await expectError(await d.api('POST', '/v1/pools/api/volumes/small/flatten'), 409, 'BUSY', /not a clone/);
    // The pool's quota also holds for clones.
    await expectError(await d.api('POST', '/v1/pools/api/volumes/small/snapshots/s1/clones', { body: { name: 'c' } }), 422, 'LIMIT_EXCEEDED');
    await d.apiJson('PATCH', '/v1/pools/api', { quotaBytes: null });
    const clone = await d.apiJson('POST', '/v1/pools/api/volumes/small/snapshots/s1/clones', { name: 'c' }, 201);
    expect(clone.parent).toEqual({ pool: 'api', volume: 'small', snapshot: 's1' });
    const children = await d.apiJson('GET', '/v1/pools/api/volumes/small/snapshots/s1/children');
    expect(children.map((c: { name: string }) => c.name)).toEqual(['c']);
    await expectError(await d.api('PATCH', '/v1/pools/api/volumes/small/snapshots/s1', { body: { protected: false } }), 409, 'BUSY', /clones/);
  });

  it('the OpenAPI document lists every route of the table in docs/daemon.md, with schemas and bearer security', async () => {
    const doc = (await (await d.api('GET', '/openapi.json', { token: null })).json()) as {
      openapi: string;
      paths: Record<string, Record<string, unknown>>;
      components: { schemas: Record<string, unknown>; securitySchemes: Record<string, unknown> };
    };
    expect(doc.openapi).toMatch(/^3\./);
    const table = readFileSync(path.join(REPO_ROOT, 'docs', 'daemon.md'), 'utf8');
    const routes: string[] = [];
    for (const line of table.split('\n')) {
      if (!line.startsWith('| GET') && !line.startsWith('| POST') && !line.startsWith('| PUT') && !line.startsWith('| PATCH') && !line.startsWith('| DELETE')) continue;
      const cell = line.split('|')[1] as string;
      let lastPath = '';
      for (const part of cell.split('·')) {
        const m = /(GET|POST|PUT|PATCH|DELETE)\s*(\S*)/.exec(part.trim());
        if (!m) continue;
        const p = m[2] === '' ? lastPath : (m[2] as string);
        lastPath = p;
        routes.push(`${m[1]} ${p}`);
      }
    }
    expect(routes.length).toBeGreaterThan(25);
    for (const route of routes) {
      const [method, p] = route.split(' ') as [string, string];
      if (p === '/openapi.json' || p === '/metrics') continue;
      expect(doc.paths[p], route).toBeDefined();
      expect(doc.paths[p]?.[method.toLowerCase()], route).toBeDefined();
    }
    expect(Object.keys(doc.components.schemas)).toEqual(expect.arrayContaining(['Error', 'Pool', 'Volume', 'Snapshot', 'Job', 'DuEntry', 'DiffExtent']));
    expect(doc.components.securitySchemes['bearer']).toMatchObject({ type: 'http', scheme: 'bearer' });
  });

  it('content import and export stream raw bytes (no body limit), and the metrics count them', async () => {
    const size = 24 << 20; // larger than the 1 MiB JSON body limit
    const data = patternBytes(size, 7);
    data.fill(0, 4 << 20, 12 << 20);
    // A streamed request body, sent in pieces.
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let off = 0; off < size; off += 1 << 20) controller.enqueue(data.subarray(off, off + (1 << 20)));
        controller.close();
      },
    });
    const res = await d.api('PUT', `${V}/streamed/content?format=raw`, { raw: body, headers: { 'content-type': 'application/octet-stream' } });
    expect(res.status).toBe(201);
    const vol = (await res.json()) as { provisionedBytes: number; allocatedBytes: number };
    expect(vol.provisionedBytes).toBe(size);
    expect(vol.allocatedBytes).toBeLessThan(size); // the zero range is not stored
    // A second import to the same name is refused while the body is still coming (409, no hang).
    const again = await d.api('PUT', `${V}/streamed/content`, { raw: data, headers: { 'content-type': 'application/octet-stream' } });
    await expectError(again, 409, 'ALREADY_EXISTS');

    const out = await d.api('GET', `${V}/streamed/content?format=raw`);
    expect(out.status).toBe(200);
    expect(out.headers.get('content-type')).toBe('application/octet-stream');
    expect(out.headers.get('x-strata-size-bytes')).toBe(String(size));
    expect(Buffer.from(await out.arrayBuffer()).equals(data)).toBe(true);
    const qcow = await d.api('GET', `${V}/streamed/content?format=qcow2`);
    const qbytes = Buffer.from(await qcow.arrayBuffer());
    expect(qbytes.subarray(0, 4).toString('latin1')).toBe('QFI\xfb');
    await expectError(await d.api('GET', `${V}/streamed/content?snapshot=nope`), 404, 'NOT_FOUND');

    // diff-stream: GET streams, PUT applies and snapshots.
    const diff = diffStream(size, null, 'd1', [{ kind: 'd', offset: 1 << 20, data: Buffer.alloc(65536, 0xee) }]);
    const applied = await d.api('PUT', `${V}/streamed/diff-stream`, { raw: diff, headers: { 'content-type': 'application/octet-stream' } });
    expect(applied.status).toBe(200);
    expect(((await applied.json()) as { snapshotCount: number }).snapshotCount).toBe(1);
    await expectError(await d.api('PUT', `${V}/streamed/diff-stream`, { raw: 'garbage\n', headers: { 'content-type': 'application/octet-stream' } }), 400, 'INVALID_ARGUMENT', /diff stream/);
    const exported = await d.api('GET', `${V}/streamed/diff-stream?to=d1`);
    expect(exported.status).toBe(200);
    const header = Buffer.from(await exported.arrayBuffer()).toString('latin1').split('\n')[0] as string;
    expect(JSON.parse(header)).toMatchObject({ format: 'strata-diff', version: 1, sizeBytes: size, from: null, to: 'd1' });

    const metrics = await (await d.api('GET', '/metrics', { token: null })).text();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1]);
    expect(value('strata_imported_bytes_total')).toBeGreaterThanOrEqual(size + diff.length);
    expect(value('strata_exported_bytes_total')).toBeGreaterThanOrEqual(size + qbytes.length);
    expect(metrics).toMatch(/^strata_volume_imported_bytes_total\{pool="default",volume="streamed"\} \d+$/m);
    expect(metrics).toMatch(/^strata_http_requests_total\{method="PUT",route="\/v1\/pools\/:pool\/volumes\/:vol\/content",status="201"\} 1$/m);
    expect(metrics).toMatch(/^strata_http_errors_total\{method="PUT",route="\/v1\/pools\/:pool\/volumes\/:vol\/content",code="ALREADY_EXISTS"\} 1$/m);
    expect(metrics).toMatch(/^strata_http_request_duration_seconds_bucket\{method="GET",route="\/v1\/pools",le="\+Inf"\} \d+$/m);
    expect(metrics).toMatch(/^strata_volume_provisioned_bytes\{pool="default",volume="streamed"\} 25165824$/m);
    expect(metrics).toMatch(/^strata_pool_volumes\{pool="default"\} \d+$/m);
    expect(metrics).toMatch(/^# TYPE strata_http_request_duration_seconds histogram$/m);
  });

  it('query strings are text: their numbers and booleans are coerced', async () => {
    // sizeBytes in the query sets the volume's size beyond the 1 MiB streamed in.
    const res = await d.api('PUT', `${V}/sized/content?format=raw&sizeBytes=${4 << 20}`, { raw: patternBytes(1 << 20, 3), headers: { 'content-type': 'application/octet-stream' } });
    expect(res.status).toBe(201);
    expect(((await res.json()) as { provisionedBytes: number }).provisionedBytes).toBe(4 << 20);
    // force=true (a boolean) deletes the volume with its snapshot; without it the delete refuses.
    expect((await d.api('POST', `${V}/sized/snapshots`, { body: { name: 's' } })).status).toBe(201);
    await expectError(await d.api('DELETE', `${V}/sized`), 409, 'BUSY', /snapshot/);
    expect((await d.api('DELETE', `${V}/sized?force=true`)).status).toBe(204);
    expect((await d.apiJson<{ name: string }[]>('GET', V)).map((v) => v.name)).not.toContain('sized');
  });

  it('jobs: copy returns a job (202) that can be watched as JSON lines to its end, listed, and cancelled', async () => {
    await d.apiJson('POST', V, { name: 'src', sizeBytes: 64 << 20 }, 201);
    const diff = diffStream(64 << 20, null, null, [{ kind: 'd', offset: 0, data: patternBytes(32 << 20, 3) }]);
    expect((await d.api('PUT', `${V}/src/diff-stream`, { raw: diff, headers: { 'content-type': 'application/octet-stream' } })).status).toBe(200);
    const job = await d.apiJson('POST', `${V}/src/copy`, { name: 'dst' }, 202);
    expect(job).toMatchObject({ kind: 'copy', target: expect.stringContaining('src'), error: null });
    const watch = await d.api('GET', `/v1/jobs/${job.id}?watch=true`);
    expect(watch.headers.get('content-type')).toMatch(/application\/x-ndjson/);
    const lines = (await watch.text()).trim().split('\n').map((l) => JSON.parse(l) as { state: string; doneBytes: number; totalBytes: number });
    expect(lines.length).toBeGreaterThan(0);
    const last = lines[lines.length - 1]!;
    expect(last.state).toBe('succeeded');
    expect(last.doneBytes).toBe(last.totalBytes);
    const listed = await d.apiJson('GET', '/v1/jobs');
    expect(listed.map((j: { id: string }) => j.id)).toContain(job.id);
    const info = await d.apiJson('GET', `/v1/jobs/${job.id}`);
    expect(info.state).toBe('succeeded');
    // Cancelling a finished job is a conflict: there is nothing to cancel.
    await expectError(await d.api('DELETE', `/v1/jobs/${job.id}`), 409, 'BUSY', new RegExp(`job ${job.id} already succeeded; nothing to cancel`));
    expect((await d.apiJson('GET', `/v1/jobs/${job.id}`)).state).toBe('succeeded');
    await expectError(await d.api('DELETE', '/v1/jobs/nope'), 404, 'NOT_FOUND');
    const dst = await d.apiJson('GET', `${V}/dst`);
    expect(dst.parent).toBeNull();
  });

  it('/metrics needs the token when the API listens beyond loopback, unless --metrics-auth none; /openapi.json never does', async () => {
    /** A daemon on every interface (port 0), reached on 127.0.0.1 only. */
    const startOnAllInterfaces = async (name: string, extra: string[]): Promise<Daemon> => {
      const dataDir = path.join(tmp.path, name);
      const daemon = await startDaemon(dataDir, { args: ['--data-dir', dataDir, '--listen', '0.0.0.0:0', ...extra], replaceArgs: true });
      daemon.url = daemon.url.replace('0.0.0.0', '127.0.0.1');
      return daemon;
    };
    const guarded = await startOnAllInterfaces('wide', []);
    try {
      expect(guarded.logs()).toMatch(/listening .*metricsAuth=token/);
      await expectError(await guarded.api('GET', '/metrics', { token: null }), 401, 'UNAUTHORIZED');
      const scraped = await guarded.api('GET', '/metrics');
      expect(scraped.status).toBe(200);
      const text = await scraped.text();
      expect(text).toMatch(/^strata_uptime_seconds /m);
      // The process's memory, so an operator can tell a growing heap from what the allocator keeps.
      const rssBytes = Number(/^strata_process_resident_memory_bytes (\d+)$/m.exec(text)?.[1]);
      const heapUsedBytes = Number(/^strata_process_heap_used_bytes (\d+)$/m.exec(text)?.[1]);
      expect(rssBytes).toBeGreaterThan(heapUsedBytes);
      expect(heapUsedBytes).toBeGreaterThan(1024 * 1024);
      expect(text).toMatch(/^strata_process_array_buffers_bytes \d+$/m);
      expect((await guarded.api('GET', '/openapi.json', { token: null })).status).toBe(200);
    } finally {
      expect((await guarded.stop()).code).toBe(0);
    }
    const open = await startOnAllInterfaces('wide-open', ['--metrics-auth', 'none']);
    try {
      expect((await open.api('GET', '/metrics', { token: null })).status).toBe(200);
      await expectError(await open.api('GET', '/v1/pools', { token: null }), 401, 'UNAUTHORIZED');
    } finally {
      expect((await open.stop()).code).toBe(0);
    }
    // On loopback the default is open, and the token can be required there too.
    expect(d.logs()).toMatch(/listening .*metricsAuth=none/);
    const dataDir = path.join(tmp.path, 'local-guarded');
    const local = await startDaemon(dataDir, { env: { STRATA_METRICS_AUTH: 'token' } });
    try {
      await expectError(await local.api('GET', '/metrics', { token: null }), 401, 'UNAUTHORIZED');
    } finally {
      expect((await local.stop()).code).toBe(0);
    }
    const bad = await serveFails(['--data-dir', path.join(tmp.path, 'bad'), '--listen', '127.0.0.1:0', '--metrics-auth', 'maybe']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/metrics auth must be 'token' or 'none', not 'maybe'/);
  });
});

/**
 * Failure cases of the S3 endpoint of `strata serve` (its own process) through real clients, each
 * refusal the S3 error the client names: @aws-sdk/client-s3, the aws CLI (s3api) and boto3 in
 * their own processes, and curl signing with --aws-sigv4 where a body no SDK would send is needed
 * (bodies that are not XML, or XML of the wrong shape). What s3-auth.test.ts and
 * s3-objects.test.ts already check with the SDK (wrong key, wrong secret, skew, expired presigned
 * URLs with curl, NoSuchUpload on UploadPart, 412 on PUT and GET) is not repeated here; the CLI and
 * boto3 are checked for those where their behaviour differs (botocore's signer and retries).
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { s3Failure as failure } from '../support/s3-failure.js';
import { useTempDir } from '../support/tmp.js';
import { run } from '../support/tools.js';
import { assertBuilt, useDaemon } from './harness.js';

assertBuilt();

const MiB = 1024 * 1024;

describe('S3 failure cases through real clients against strata serve', () => {
  const suite = useDaemon();
  const tmp = useTempDir();
  let key: { id: string; secret: string };
  let s3: S3Client;

  function env(extra: Record<string, string> = {}): Record<string, string> {
    return { AWS_ACCESS_KEY_ID: key.id, AWS_SECRET_ACCESS_KEY: key.secret, AWS_DEFAULT_REGION: 'us-east-1', AWS_CONFIG_FILE: '/dev/null', AWS_SHARED_CREDENTIALS_FILE: '/dev/null', S3_URL: suite.d.s3Url as string, ...extra };
  }
  /** `aws s3api ...`: the S3 error code it printed ("An error occurred (Code) when calling ..."), or 'OK'. */
  function cli(args: string[], extraEnv: Record<string, string> = {}): string {
    const r = run('aws', ['s3api', ...args, '--endpoint-url', suite.d.s3Url as string], { timeoutMs: 60_000, env: env({ AWS_MAX_ATTEMPTS: '1', ...extraEnv }) });
    if (r.code === 0) return 'OK';
    const code = /An error occurred \(([A-Za-z0-9]+)\)/.exec(r.stderr)?.[1];
    if (code === undefined) throw new Error(`aws s3api ${args[0]} failed without an S3 error code: ${r.stderr}`);
    return code;
  }
  /** curl signing with SigV4 (curl 7.88 does not send x-amz-content-sha256 itself; S3 needs it): status and body. */
  function signedCurl(method: string, url: string, body: string): { status: number; body: string } {
    const r = run('curl', ['-s', '-w', '\n%{http_code}', '-X', method, '--aws-sigv4', 'aws:amz:us-east-1:s3', '--user', `${key.id}:${key.secret}`, '-H', 'x-amz-content-sha256: UNSIGNED-PAYLOAD', '-H', 'content-type: application/xml', '--data-binary', body, url], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    const at = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(at + 1)), body: r.stdout.slice(0, at) };
  }
  async function upload(objectKey: string, sizes: readonly number[]): Promise<{ uploadId: string; etags: string[] }> {
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket: 'fail', Key: objectKey }));
    const etags: string[] = [];
    for (const [i, size] of sizes.entries()) {
      etags.push((await s3.send(new UploadPartCommand({ Bucket: 'fail', Key: objectKey, UploadId, PartNumber: i + 1, Body: randomBytes(size) }))).ETag!);
    }
    return { uploadId: UploadId!, etags };
  }

  it('setup: a key and a bucket', async () => {
    suite.d.cliOk(['user', 'create', 'alice']);
    key = suite.d.json<{ id: string; secret: string }>(['user', 'key', 'create', 'alice']);
    s3 = new S3Client({ endpoint: suite.d.s3Url as string, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: key.id, secretAccessKey: key.secret } });
    await s3.send(new CreateBucketCommand({ Bucket: 'fail' }));
  });

  it('MalformedXML: bodies that are not XML or not the right document, from curl --aws-sigv4 and the SDK', async () => {
    const base = suite.d.s3Url as string;
    const { uploadId } = await upload('malformed.bin', [1000]);
    const complete = `${base}/fail/malformed.bin?uploadId=${encodeURIComponent(uploadId)}`;
    for (const body of ['this is not xml', '<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>', '<Delete><Object><Key>k</Key></Object></Delete>', '<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>"x"</ETag></Part></CompleteMultipartUpload>', '<!DOCTYPE x [<!ENTITY a "b">]><CompleteMultipartUpload/>']) {
      const answer = signedCurl('POST', complete, body);
      expect(answer.status, body).toBe(400);
      expect(answer.body, body).toContain('<Code>MalformedXML</Code>');
    }
    for (const body of ['{"Objects": []}', '<CompleteMultipartUpload/>', '<Delete><Object><VersionId>1</VersionId></Object></Delete>']) {
      const answer = signedCurl('POST', `${base}/fail?delete=`, body);
      expect(answer.status, body).toBe(400);
      expect(answer.body, body).toContain('<Code>MalformedXML</Code>');
    }
    // The SDK sends well-formed documents; empty lists are the wrong shape.
    expect(await failure(s3.send(new CompleteMultipartUploadCommand({ Bucket: 'fail', Key: 'malformed.bin', UploadId: uploadId, MultipartUpload: { Parts: [] } })))).toEqual({ name: 'MalformedXML', status: 400 });
    expect(await failure(s3.send(new DeleteObjectsCommand({ Bucket: 'fail', Delete: { Objects: [] } })))).toEqual({ name: 'MalformedXML', status: 400 });
    // Nothing was completed: the upload is still there.
    expect((await s3.send(new ListPartsCommand({ Bucket: 'fail', Key: 'malformed.bin', UploadId: uploadId }))).Parts).toHaveLength(1);
    await s3.send(new AbortMultipartUploadCommand({ Bucket: 'fail', Key: 'malformed.bin', UploadId: uploadId }));
  });

  it('@aws-sdk/client-s3: EntityTooSmall, InvalidPartOrder, InvalidPart, NoSuchUpload; a refused complete leaves the upload to finish', async () => {
    const { uploadId, etags } = await upload('parts.bin', [MiB, 5 * MiB, 1000]);
    const complete = (parts: { ETag: string; PartNumber: number }[]) => s3.send(new CompleteMultipartUploadCommand({ Bucket: 'fail', Key: 'parts.bin', UploadId: uploadId, MultipartUpload: { Parts: parts } }));
    const all = etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 }));
    expect(await failure(complete(all))).toEqual({ name: 'EntityTooSmall', status: 400 });
    expect(await failure(complete([all[1]!, all[0]!]))).toEqual({ name: 'InvalidPartOrder', status: 400 });
    expect(await failure(complete([all[1]!, all[1]!]))).toEqual({ name: 'InvalidPartOrder', status: 400 });
    expect(await failure(complete([{ ETag: '"00000000000000000000000000000000"', PartNumber: 2 }]))).toEqual({ name: 'InvalidPart', status: 400 });
    expect(await failure(complete([{ ETag: etags[0]!, PartNumber: 9 }]))).toEqual({ name: 'InvalidPart', status: 400 });
    expect(await failure(s3.send(new GetObjectCommand({ Bucket: 'fail', Key: 'parts.bin' })))).toEqual({ name: 'NoSuchKey', status: 404 });
    // The upload survived every refusal: parts 2 and 3 complete it.
    const done = await complete([all[1]!, { ETag: etags[2]!, PartNumber: 3 }]);
    expect(done.ETag).toMatch(/-2"$/);
    expect((await s3.send(new GetObjectCommand({ Bucket: 'fail', Key: 'parts.bin' }))).ContentLength).toBe(5 * MiB + 1000);
    // Completed: the upload id is gone for every operation.
    expect(await failure(complete(all))).toEqual({ name: 'NoSuchUpload', status: 404 });
    expect(await failure(s3.send(new AbortMultipartUploadCommand({ Bucket: 'fail', Key: 'parts.bin', UploadId: uploadId })))).toEqual({ name: 'NoSuchUpload', status: 404 });
    expect(await failure(s3.send(new ListPartsCommand({ Bucket: 'fail', Key: 'parts.bin', UploadId: uploadId })))).toEqual({ name: 'NoSuchUpload', status: 404 });
    expect(await failure(s3.send(new ListMultipartUploadsCommand({ Bucket: 'nobucket' })))).toEqual({ name: 'NoSuchBucket', status: 404 });
    expect(await failure(s3.send(new PutObjectCommand({ Bucket: 'nobucket', Key: 'k', Body: 'x' })))).toEqual({ name: 'NoSuchBucket', status: 404 });
  });

  it('the aws CLI (s3api): the multipart refusals, wrong key, wrong secret, missing bucket and key, precondition failed', async () => {
    const { uploadId, etags } = await upload('cli-parts.bin', [MiB, 5 * MiB]);
    const partsFile = (parts: { ETag: string; PartNumber: number }[]): string => {
      const file = path.join(tmp.path, `parts-${randomBytes(4).toString('hex')}.json`);
      writeFileSync(file, JSON.stringify({ Parts: parts }));
      return `file://${file}`;
    };
    const complete = (parts: { ETag: string; PartNumber: number }[]) => cli(['complete-multipart-upload', '--bucket', 'fail', '--key', 'cli-parts.bin', '--upload-id', uploadId, '--multipart-upload', partsFile(parts)]);
    expect(complete([{ ETag: etags[0]!, PartNumber: 1 }, { ETag: etags[1]!, PartNumber: 2 }])).toBe('EntityTooSmall');
    expect(complete([{ ETag: etags[1]!, PartNumber: 2 }, { ETag: etags[0]!, PartNumber: 1 }])).toBe('InvalidPartOrder');
    expect(complete([{ ETag: '"00000000000000000000000000000000"', PartNumber: 1 }])).toBe('InvalidPart');
    expect(cli(['abort-multipart-upload', '--bucket', 'fail', '--key', 'cli-parts.bin', '--upload-id', uploadId])).toBe('OK');
    expect(complete([{ ETag: etags[1]!, PartNumber: 2 }])).toBe('NoSuchUpload');
    expect(cli(['list-parts', '--bucket', 'fail', '--key', 'cli-parts.bin', '--upload-id', uploadId])).toBe('NoSuchUpload');

    expect(cli(['list-buckets'], { AWS_ACCESS_KEY_ID: 'STRAUNKNOWNKEY000000' })).toBe('InvalidAccessKeyId');
    expect(cli(['list-buckets'], { AWS_SECRET_ACCESS_KEY: `${key.secret}x` })).toBe('SignatureDoesNotMatch');
    expect(cli(['get-object', '--bucket', 'fail', '--key', 'missing', path.join(tmp.path, 'out')])).toBe('NoSuchKey');
    expect(cli(['get-object', '--bucket', 'nobucket', '--key', 'k', path.join(tmp.path, 'out')])).toBe('NoSuchBucket');
    // HEAD errors have no body: botocore names them by status.
    expect(cli(['head-object', '--bucket', 'fail', '--key', 'missing'])).toBe('404');
    const body = path.join(tmp.path, 'body.txt');
    writeFileSync(body, 'cli body');
    expect(cli(['put-object', '--bucket', 'fail', '--key', 'cli.txt', '--body', body])).toBe('OK');
    expect(cli(['put-object', '--bucket', 'fail', '--key', 'cli.txt', '--body', body, '--if-none-match', '*'])).toBe('PreconditionFailed');
    expect(cli(['get-object', '--bucket', 'fail', '--key', 'cli.txt', '--if-match', '"0000"', path.join(tmp.path, 'out')])).toBe('PreconditionFailed');
  });

  it('boto3: the multipart refusals, auth refusals, skewed clock, expired presigned URL, missing bucket and key, precondition failed', () => {
    const script = [
      'import datetime, json, os, urllib.request, urllib.error',
      'import boto3, botocore, botocore.auth',
      'from botocore.config import Config',
      "config = Config(signature_version='s3v4', s3={'addressing_style': 'path'}, retries={'max_attempts': 1, 'mode': 'standard'})",
      "def client(**kw):",
      "    return boto3.client('s3', endpoint_url=os.environ['S3_URL'], config=config, **kw)",
      's3 = client()',
      'out = {}',
      'def code(name, call):',
      '    try:',
      '        call()',
      "        out[name] = 'OK'",
      '    except botocore.exceptions.ClientError as e:',
      "        out[name] = e.response['Error']['Code']",
      "u = s3.create_multipart_upload(Bucket='fail', Key='boto.bin')['UploadId']",
      "e1 = s3.upload_part(Bucket='fail', Key='boto.bin', UploadId=u, PartNumber=1, Body=os.urandom(1024 * 1024))['ETag']",
      "e2 = s3.upload_part(Bucket='fail', Key='boto.bin', UploadId=u, PartNumber=2, Body=os.urandom(5 * 1024 * 1024))['ETag']",
      "def complete(parts, upload=u):",
      "    return lambda: s3.complete_multipart_upload(Bucket='fail', Key='boto.bin', UploadId=upload, MultipartUpload={'Parts': parts})",
      "code('too_small', complete([{'ETag': e1, 'PartNumber': 1}, {'ETag': e2, 'PartNumber': 2}]))",
      "code('order', complete([{'ETag': e2, 'PartNumber': 2}, {'ETag': e1, 'PartNumber': 1}]))",
      "code('wrong_etag', complete([{'ETag': '\"0000\"', 'PartNumber': 1}]))",
      "code('no_upload', complete([{'ETag': e1, 'PartNumber': 1}], upload='nope'))",
      "code('abort', lambda: s3.abort_multipart_upload(Bucket='fail', Key='boto.bin', UploadId=u))",
      "code('empty_delete', lambda: s3.delete_objects(Bucket='fail', Delete={'Objects': []}))",
      "code('unknown_key', lambda: client(aws_access_key_id='STRAUNKNOWNKEY000000', aws_secret_access_key='x').list_buckets())",
      "code('wrong_secret', lambda: client(aws_access_key_id=os.environ['AWS_ACCESS_KEY_ID'], aws_secret_access_key='wrong').list_buckets())",
      "code('no_key', lambda: s3.get_object(Bucket='fail', Key='missing'))",
      "code('no_bucket', lambda: s3.get_object(Bucket='nobucket', Key='k'))",
      "s3.put_object(Bucket='fail', Key='boto.txt', Body=b'boto')",
      "code('if_none_match', lambda: s3.put_object(Bucket='fail', Key='boto.txt', Body=b'again', IfNoneMatch='*'))",
      "code('if_match', lambda: s3.get_object(Bucket='fail', Key='boto.txt', IfMatch='\"0000\"'))",
      // botocore signs with get_current_datetime: move its clock to sign as a skewed client would.
      'real_now = botocore.auth.get_current_datetime',
      'botocore.auth.get_current_datetime = lambda: real_now() + datetime.timedelta(minutes=20)',
      "code('skewed', lambda: client().list_buckets())",
      'botocore.auth.get_current_datetime = lambda: real_now() - datetime.timedelta(hours=1)',
      "url = s3.generate_presigned_url('get_object', Params={'Bucket': 'fail', 'Key': 'boto.txt'}, ExpiresIn=60)",
      'botocore.auth.get_current_datetime = real_now',
      'try:',
      '    urllib.request.urlopen(url)',
      "    out['expired'] = 'OK'",
      'except urllib.error.HTTPError as e:',
      "    body = e.read().decode()",
      "    out['expired'] = str(e.code) + ' ' + body[body.index('<Code>') + 6:body.index('</Code>')]",
      "fresh = s3.generate_presigned_url('get_object', Params={'Bucket': 'fail', 'Key': 'boto.txt'}, ExpiresIn=60)",
      // botocore presigns with Signature Version 2 unless told s3v4: refused by name, not taken as anonymous.
      "v2 = boto3.client('s3', endpoint_url=os.environ['S3_URL'], config=Config(s3={'addressing_style': 'path'})).generate_presigned_url('get_object', Params={'Bucket': 'fail', 'Key': 'boto.txt'}, ExpiresIn=60)",
      'try:',
      '    urllib.request.urlopen(v2)',
      "    out['v2'] = 'OK'",
      'except urllib.error.HTTPError as e:',
      "    body = e.read().decode()",
      "    out['v2'] = str(e.code) + ' ' + body[body.index('<Code>') + 6:body.index('</Code>')]",
      'try:',
      "    out['fresh'] = urllib.request.urlopen(fresh).read().decode()",
      'except urllib.error.HTTPError as e:',
      "    out['fresh'] = e.read().decode()",
      'print(json.dumps(out))',
    ].join('\n');
    const r = run('python3', ['-c', script], { timeoutMs: 120_000, env: env() });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      too_small: 'EntityTooSmall',
      order: 'InvalidPartOrder',
      wrong_etag: 'InvalidPart',
      no_upload: 'NoSuchUpload',
      abort: 'OK',
      empty_delete: 'MalformedXML',
      unknown_key: 'InvalidAccessKeyId',
      wrong_secret: 'SignatureDoesNotMatch',
      no_key: 'NoSuchKey',
      no_bucket: 'NoSuchBucket',
      if_none_match: 'PreconditionFailed',
      if_match: 'PreconditionFailed',
      skewed: 'RequestTimeTooSkewed',
      expired: '403 AccessDenied',
      fresh: 'boto',
      v2: '400 InvalidRequest',
    });
  });
});

/**
 * Endpoint resolution (method + addressing + query -> the typed endpoint, before any handler) and
 * the XML reader and writer of the S3 endpoint.
 */
import { describe, expect, it } from 'vitest';
import { addressOf, resolveEndpoint, type S3Endpoint } from '../../src/api/s3/endpoints.js';
import { S3Error } from '../../src/api/s3/errors.js';
import { childText, childrenNamed, errorXml, parseXml, textElement, xmlDocument } from '../../src/api/s3/xml.js';

function endpointOf(method: string, url: string, copySource?: string, host = '127.0.0.1:7480'): S3Endpoint {
  return resolveEndpoint(method, url, { host, copySource }, ['s3.example.com']).endpoint;
}

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof S3Error) return err.code;
    throw err;
  }
  throw new Error('expected a refusal');
}

describe('resolveEndpoint', () => {
  it.each([
    ['GET', '/', undefined, 'ListBuckets'],
    ['PUT', '/b', undefined, 'CreateBucket'],
    ['HEAD', '/b', undefined, 'HeadBucket'],
    ['DELETE', '/b', undefined, 'DeleteBucket'],
    ['GET', '/b?location', undefined, 'GetBucketLocation'],
    ['GET', '/b?versioning', undefined, 'GetBucketVersioning'],
    ['PUT', '/b?versioning', undefined, 'PutBucketVersioning'],
    ['GET', '/b', undefined, 'ListObjects'],
    ['GET', '/b?prefix=a&marker=x', undefined, 'ListObjects'],
    ['GET', '/b?list-type=2&prefix=a', undefined, 'ListObjectsV2'],
    ['GET', '/b?versions', undefined, 'ListObjectVersions'],
    ['GET', '/b?uploads', undefined, 'ListMultipartUploads'],
    ['POST', '/b?delete', undefined, 'DeleteObjects'],
    ['GET', '/b?acl', undefined, 'GetBucketAcl'],
    ['PUT', '/b?acl', undefined, 'PutBucketAcl'],
    ['PUT', '/b/k', undefined, 'PutObject'],
    ['PUT', '/b/k', '/other/src', 'CopyObject'],
    ['GET', '/b/k', undefined, 'GetObject'],
    ['HEAD', '/b/k', undefined, 'HeadObject'],
    ['DELETE', '/b/k', undefined, 'DeleteObject'],
    ['POST', '/b/k?uploads', undefined, 'CreateMultipartUpload'],
    ['PUT', '/b/k?partNumber=1&uploadId=u', undefined, 'UploadPart'],
    ['PUT', '/b/k?partNumber=1&uploadId=u', '/b/src', 'UploadPartCopy'],
    ['POST', '/b/k?uploadId=u', undefined, 'CompleteMultipartUpload'],
    ['DELETE', '/b/k?uploadId=u', undefined, 'AbortMultipartUpload'],
    ['GET', '/b/k?uploadId=u', undefined, 'ListParts'],
    ['GET', '/b/k?acl', undefined, 'GetObjectAcl'],
    ['PUT', '/b/k?acl', undefined, 'PutObjectAcl'],
  ] as const)('%s %s (copy source %s) is %s', (method, url, copySource, expected) => {
    expect(endpointOf(method, url, copySource)).toBe(expected);
  });

  it('refuses what S3 does not do, and names what this endpoint does not', () => {
    expect(codeOf(() => endpointOf('PUT', '/'))).toBe('MethodNotAllowed');
    expect(codeOf(() => endpointOf('POST', '/b'))).toBe('MethodNotAllowed');
    expect(codeOf(() => endpointOf('PUT', '/b/k?partNumber=1'))).toBe('InvalidRequest');
    expect(codeOf(() => endpointOf('GET', '/b?policy'))).toBe('NotImplemented');
    expect(codeOf(() => endpointOf('PUT', '/b/k?tagging'))).toBe('NotImplemented');
    expect(codeOf(() => endpointOf('GET', `/b/${'k'.repeat(1025)}`))).toBe('KeyTooLongError');
  });

  it('reads bucket and key path style and virtual-host style, keys decoded once', () => {
    expect(addressOf('/b/dir/a%20b%2Bc', '127.0.0.1:7480', [])).toEqual({ bucket: 'b', key: 'dir/a b+c' });
    expect(addressOf('/b/', 'localhost', [])).toEqual({ bucket: 'b', key: undefined });
    expect(addressOf('/dir/k%25', 'photos.s3.example.com:7480', ['s3.example.com'])).toEqual({ bucket: 'photos', key: 'dir/k%' });
    expect(addressOf('/', 'Photos.S3.Example.com', ['s3.example.com'])).toEqual({ bucket: 'photos', key: undefined });
    // The domain itself is path style.
    expect(addressOf('/b/k', 's3.example.com', ['s3.example.com'])).toEqual({ bucket: 'b', key: 'k' });
    expect(endpointOf('GET', '/k', undefined, 'b.s3.example.com')).toBe('GetObject');
  });
});

describe('XML reader', () => {
  it('reads a DeleteObjects document: namespace prefixes, entities, CDATA, comments', () => {
    const doc = parseXml(
      '<?xml version="1.0" encoding="UTF-8"?>\n<s3:Delete xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><!-- two keys -->' +
        '<s3:Quiet>true</s3:Quiet><s3:Object><s3:Key>a &amp; b &lt;c&gt; &#x263A;&#65;</s3:Key></s3:Object>' +
        '<s3:Object><s3:Key><![CDATA[x<y>&z]]></s3:Key><s3:VersionId>v1</s3:VersionId></s3:Object></s3:Delete>',
    );
    expect(doc.name).toBe('Delete');
    expect(childText(doc, 'Quiet')).toBe('true');
    expect(childrenNamed(doc, 'Object').map((o) => childText(o, 'Key'))).toEqual(['a & b <c> \u263AA', 'x<y>&z']);
    expect(childText(childrenNamed(doc, 'Object')[1]!, 'VersionId')).toBe('v1');
  });

  it.each([
    ['an unclosed element', '<A><B>x</B>', /not closed/],
    ['a mismatched close', '<A><B>x</A></B>', /closes nothing open/],
    ['a DOCTYPE', '<!DOCTYPE A [<!ENTITY e SYSTEM "file:///etc/passwd">]><A>&e;</A>', /DOCTYPE/],
    ['an unknown entity', '<A>&e;</A>', /unknown entity/],
    ['a bare ampersand', '<A>a & b</A>', /bare '&'/],
    ['two roots', '<A/><B/>', /more than one root/],
    ['text outside the root', 'junk<A/>', /text outside/],
    ['deep nesting', `${'<A>'.repeat(17)}${'</A>'.repeat(17)}`, /deeper than 16/],
    ['no element', '   ', /no root element/],
  ])('refuses %s as MalformedXML', (_name, text, message) => {
    try {
      parseXml(text);
      throw new Error('expected MalformedXML');
    } catch (err) {
      expect(err).toBeInstanceOf(S3Error);
      expect((err as S3Error).code).toBe('MalformedXML');
      expect((err as S3Error).message).toMatch(message);
    }
  });

  it('refuses a repeated element where one is expected', () => {
    expect(() => childText(parseXml('<A><S>1</S><S>2</S></A>'), 'S')).toThrow(/more than one <S>/);
  });
});

describe('XML writer', () => {
  it('escapes text and puts S3\'s namespace on the root', () => {
    expect(xmlDocument('R', [textElement('Key', `a<b>&"c'`), undefined, false])).toBe(
      '<?xml version="1.0" encoding="UTF-8"?>\n<R xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Key>a&lt;b&gt;&amp;&quot;c&apos;</Key></R>',
    );
    expect(errorXml('NoSuchKey', 'no <key>', '/b/k', 'ID', { Key: 'k' })).toBe(
      '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code><Message>no &lt;key&gt;</Message><Resource>/b/k</Resource><RequestId>ID</RequestId><Key>k</Key></Error>',
    );
  });
});

/** loadConfig: the S3 endpoint's address and virtual-host domains from flags, environment and file. */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/daemon/config.js';
import { tempDir } from '../support/tmp.js';

describe('daemon config: s3Listen and s3Domains', () => {
  it('defaults to 127.0.0.1:7480 and path style only; off turns it off; flag over environment over file', () => {
    const dir = tempDir();
    expect(loadConfig({ dataDir: dir }, {}, dir)).toMatchObject({ s3Listen: { host: '127.0.0.1', port: 7480 }, s3Domains: [] });
    writeFileSync(path.join(dir, 'strata.json'), JSON.stringify({ s3Listen: '0.0.0.0:9000', s3Domain: 's3.example.com' }));
    expect(loadConfig({ dataDir: dir }, {}, dir)).toMatchObject({ s3Listen: { host: '0.0.0.0', port: 9000 }, s3Domains: ['s3.example.com'] });
    expect(loadConfig({ dataDir: dir }, { STRATA_S3_LISTEN: 'off' }, dir).s3Listen).toBeUndefined();
    expect(loadConfig({ dataDir: dir, s3Listen: '127.0.0.1:0', s3Domain: 'A.Example.com, .b.example.org' }, { STRATA_S3_LISTEN: 'off' }, dir)).toMatchObject({
      s3Listen: { host: '127.0.0.1', port: 0 },
      s3Domains: ['a.example.com', 'b.example.org'],
    });
  });

  it('refuses a bad address or domain, naming where it came from', () => {
    const dir = tempDir();
    expect(() => loadConfig({ dataDir: dir, s3Listen: 'nowhere' }, {}, dir)).toThrow(/--s3-listen: 'nowhere' is not host:port/);
    expect(() => loadConfig({ dataDir: dir }, { STRATA_S3_DOMAIN: 'bad_domain!' }, dir)).toThrow(/STRATA_S3_DOMAIN: 'bad_domain!' is not a DNS domain/);
  });
});

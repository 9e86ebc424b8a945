/** loadConfig: the NBD and vhost-user busy-poll windows from flags, environment and config file, and bad values. */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_NBD_POLL_US, DEFAULT_VHOST_POLL_US, loadConfig } from '../../src/daemon/config.js';
import { tempDir } from '../support/tmp.js';

describe('daemon config: nbdPollUs', () => {
  it('defaults, and flag over environment over file', () => {
    const dir = tempDir();
    expect(loadConfig({ dataDir: dir }, {}, dir).nbdPollUs).toBe(DEFAULT_NBD_POLL_US);
    writeFileSync(path.join(dir, 'strata.json'), JSON.stringify({ nbdPollUs: 30 }));
    expect(loadConfig({ dataDir: dir }, {}, dir).nbdPollUs).toBe(30);
    expect(loadConfig({ dataDir: dir }, { STRATA_NBD_POLL_US: '0' }, dir).nbdPollUs).toBe(0);
    expect(loadConfig({ dataDir: dir, nbdPollUs: '250' }, { STRATA_NBD_POLL_US: '0' }, dir).nbdPollUs).toBe(250);
  });

  it('refuses values that are not 0..1000 whole microseconds, naming where they came from', () => {
    const dir = tempDir();
    for (const bad of ['-1', '1001', '1.5', 'fast', '1e3']) {
      expect(() => loadConfig({ dataDir: dir, nbdPollUs: bad }, {}, dir)).toThrow(/--nbd-poll-us: the NBD poll window must be 0\.\.1000/);
    }
    expect(() => loadConfig({ dataDir: dir }, { STRATA_NBD_POLL_US: 'x' }, dir)).toThrow(/STRATA_NBD_POLL_US/);
    writeFileSync(path.join(dir, 'strata.json'), JSON.stringify({ nbdPollUs: '50' }));
    expect(() => loadConfig({ dataDir: dir }, {}, dir)).toThrow(/'nbdPollUs' must be a non-negative integer/);
  });
});

describe('daemon config: vhostPollUs', () => {
  it('defaults, and flag over environment over file, apart from the NBD window', () => {
    const dir = tempDir();
    expect(DEFAULT_VHOST_POLL_US).toBe(64); // docs/cli.md and `strata serve --help` say 64
    expect(loadConfig({ dataDir: dir }, {}, dir).vhostPollUs).toBe(DEFAULT_VHOST_POLL_US);
    writeFileSync(path.join(dir, 'strata.json'), JSON.stringify({ vhostPollUs: 50, nbdPollUs: 70 }));
    expect(loadConfig({ dataDir: dir }, {}, dir)).toMatchObject({ vhostPollUs: 50, nbdPollUs: 70 });
    expect(loadConfig({ dataDir: dir }, { STRATA_VHOST_POLL_US: '0' }, dir)).toMatchObject({ vhostPollUs: 0, nbdPollUs: 70 });
    expect(loadConfig({ dataDir: dir, vhostPollUs: '250' }, { STRATA_VHOST_POLL_US: '0' }, dir).vhostPollUs).toBe(250);
  });

  it('refuses values that are not 0..1000 whole microseconds, naming the window and where it came from', () => {
    const dir = tempDir();
    for (const bad of ['-1', '1001', '2.5', 'eager']) {
      expect(() => loadConfig({ dataDir: dir, vhostPollUs: bad }, {}, dir)).toThrow(/--vhost-poll-us: the vhost-user poll window must be 0\.\.1000/);
    }
    expect(() => loadConfig({ dataDir: dir }, { STRATA_VHOST_POLL_US: 'x' }, dir)).toThrow(/STRATA_VHOST_POLL_US: the vhost-user poll window/);
    writeFileSync(path.join(dir, 'strata.json'), JSON.stringify({ vhostPollUs: true }));
    expect(() => loadConfig({ dataDir: dir }, {}, dir)).toThrow(/'vhostPollUs' must be a non-negative integer/);
  });
});

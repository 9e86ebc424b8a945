/** loadConfig: vhostOnNoSpace (what a vhost-user guest's write into a full pool does) from flags, environment and config file. */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/daemon/config.js';
import { tempDir } from '../support/tmp.js';

describe('daemon config: vhostOnNoSpace', () => {
  it("defaults to 'wait', and flag over environment over file", () => {
    const dir = tempDir();
    expect(loadConfig({ dataDir: dir }, {}, dir).vhostOnNoSpace).toBe('wait');
    writeFileSync(path.join(dir, 'strata.json'), JSON.stringify({ vhostOnNoSpace: 'error' }));
    expect(loadConfig({ dataDir: dir }, {}, dir).vhostOnNoSpace).toBe('error');
    expect(loadConfig({ dataDir: dir }, { STRATA_VHOST_ON_NO_SPACE: 'wait' }, dir).vhostOnNoSpace).toBe('wait');
    expect(loadConfig({ dataDir: dir, vhostOnNoSpace: 'error' }, { STRATA_VHOST_ON_NO_SPACE: 'wait' }, dir).vhostOnNoSpace).toBe('error');
  });

  it('refuses anything but wait and error, naming where it came from', () => {
    const dir = tempDir();
    expect(() => loadConfig({ dataDir: dir, vhostOnNoSpace: 'pause' }, {}, dir)).toThrow(/--vhost-on-no-space: .* must be 'wait' or 'error', not 'pause'/);
    expect(() => loadConfig({ dataDir: dir }, { STRATA_VHOST_ON_NO_SPACE: 'x' }, dir)).toThrow(/STRATA_VHOST_ON_NO_SPACE/);
    writeFileSync(path.join(dir, 'strata.json'), JSON.stringify({ vhostOnNoSpace: 1 }));
    expect(() => loadConfig({ dataDir: dir }, {}, dir)).toThrow(/'vhostOnNoSpace' must be a string/);
  });
});

/**
 * A standalone Strata vhost-user-blk back-end over one qcow2 image, for bench/vhost-bench.ts (a
 * separate process, so the benchmark's front-end does not share its event loop or CPU time):
 *   node dist/bench/vhost-serve.js IMAGE SOCKET [QUEUES]
 * Its rings are polled as the daemon's are (vhostPollUs). Prints "ready" once the socket listens; SIGTERM stops it and closes the image.
 */
import { Qcow2Image } from '../formats/qcow2/index.js';
import { VhostUserBlkExport } from '../src/export/vhost-user/export.js';
import { DEFAULT_VHOST_POLL_US } from '../src/daemon/config.js';
import { LocalHostFile } from '../src/store/local-file.js';

const [imagePath, socketPath, queues] = process.argv.slice(2);
if (!imagePath || !socketPath) {
  process.stderr.write('usage: vhost-serve IMAGE SOCKET [QUEUES]\n');
  process.exit(2);
}
const image = await Qcow2Image.open(await LocalHostFile.open(imagePath));
// Rings polled as `strata serve` polls them (its vhostPollUs; STRATA_VHOST_POLL_US as there).
const pollWindowUs = Number(process.env['STRATA_VHOST_POLL_US'] ?? DEFAULT_VHOST_POLL_US);
const exp = new VhostUserBlkExport({ socketPath, queueCount: Number(queues ?? '1'), readOnly: false, serial: 'strata-bench', poll: { windowUs: pollWindowUs } });
await exp.start(image);
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  void (async () => {
    exp.requestShutdown();
    await exp.closed;
    await image.close();
    process.exit(0);
  })();
});

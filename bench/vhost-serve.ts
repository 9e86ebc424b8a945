/**
 * A standalone Strata vhost-user-blk back-end over one qcow2 image, for bench/vhost-bench.ts (a
 * separate process, so the benchmark's front-end does not share its event loop or CPU time):
 *   node dist/bench/vhost-serve.js IMAGE SOCKET [QUEUES]
 * Prints "ready" once the socket listens; SIGTERM stops it and closes the image.
 */
import { Qcow2Image } from '../formats/qcow2/index.js';
import { VhostUserBlkExport } from '../src/export/vhost-user/export.js';
import { LocalHostFile } from '../src/store/local-file.js';

const [imagePath, socketPath, queues] = process.argv.slice(2);
if (!imagePath || !socketPath) {
  process.stderr.write('usage: vhost-serve IMAGE SOCKET [QUEUES]\n');
  process.exit(2);
}
const image = await Qcow2Image.open(await LocalHostFile.open(imagePath));
const exp = new VhostUserBlkExport({ socketPath, queueCount: Number(queues ?? '1'), readOnly: false, serial: 'strata-bench' });
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

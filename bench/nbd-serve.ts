/**
 * A standalone Strata NBD server over one qcow2 image, for bench/nbd-bench.ts (until the daemon
 * exports volumes itself): node dist/bench/nbd-serve.js IMAGE SOCKET
 */
import { Qcow2Image } from '../formats/qcow2/index.js';
import { NbdServer } from '../src/export/nbd/server.js';
import { LocalHostFile } from '../src/store/local-file.js';

const [imagePath, socketPath] = process.argv.slice(2);
if (!imagePath || !socketPath) {
  process.stderr.write('usage: nbd-serve IMAGE SOCKET\n');
  process.exit(2);
}
const image = await Qcow2Image.open(await LocalHostFile.open(imagePath));
const server = new NbdServer({ exports: new Map([['', { device: image, readOnly: false }]]) });
await server.listen({ unixPath: socketPath });
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  void (async () => {
    await server.close();
    await image.close();
    process.exit(0);
  })();
});

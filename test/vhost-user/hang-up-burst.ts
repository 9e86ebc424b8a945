/** Front-ends that connect and hang up at once, as a crash-looping VM manager or a health check does. */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { EAGAIN } from '../../src/sys/libc.js';
import { UnixStream } from '../../src/sys/unix-socket.js';

/** Connects and closes at once, count times in a row; a full listen backlog is waited out. */
export async function hangUpBurst(socketPath: string, count: number): Promise<void> {
  for (let i = 0; i < count; ) {
    try {
      UnixStream.connect(socketPath).close();
      i++;
    } catch (err) {
      if ((err as { errno?: number }).errno !== EAGAIN) throw err;
      await nextTurn(); // the backlog is full: let the listener accept
    }
  }
}

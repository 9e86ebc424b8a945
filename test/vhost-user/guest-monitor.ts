/**
 * What a hung guest was doing, asked of QEMU's human monitor (HMP) before the rig kills it: the
 * run state, each vCPU's registers (where the kernel is: with nokaslr its addresses match
 * System.map), and the virtio queues as QEMU and the vhost-user back-end left them. A guest seen
 * once to hang during boot with a quiet console left nothing else to go on.
 */
import net from 'node:net';

/** The HMP prompt QEMU prints after each command's output. */
const PROMPT = '(qemu) ';

/** The lines of `info registers` kept in the report. */
const REGISTER_LINES = /^(CPU#|RAX=|RSI=|R8 =|R12=|RIP=|CR0=)/;

/** Where a split virtqueue's avail and used rings keep their index (after a 16-bit flags field). */
const RING_INDEX_OFFSET_BYTES = 2n;
/** Bytes per entry of the avail ring (a u16 head) and of the used ring ({u32 id, u32 len}). */
const AVAIL_ENTRY_BYTES = 2n;
const USED_ENTRY_BYTES = 8n;

/** Sends `command` and resolves with its output, up to the next prompt. */
function ask(socket: net.Socket, read: { text: string; wake: (() => void) | undefined }, command: string): Promise<string> {
  const from = read.text.length;
  socket.write(`${command}\n`);
  return new Promise((resolve) => {
    const check = (): void => {
      const end = read.text.indexOf(PROMPT, from);
      if (end < 0) {
        read.wake = check;
        return;
      }
      read.wake = undefined;
      // The monitor's line editor echoes the command with cursor movements, on a line of its own.
      const answer = read.text.slice(from, end);
      const echoEnd = answer.indexOf('\n');
      resolve(echoEnd < 0 ? answer : answer.slice(echoEnd + 1));
    };
    check();
  });
}

/**
 * The monitor's answers to a fixed set of questions, as text; whatever goes wrong (no monitor, a
 * command this QEMU lacks, no answer within `timeoutMs`) is reported in the text, never thrown.
 */
export async function monitorReport(monitorPath: string, queues: number, timeoutMs = 5_000): Promise<string> {
  const socket = net.createConnection(monitorPath);
  const read: { text: string; wake: (() => void) | undefined } = { text: '', wake: undefined };
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    read.text += chunk;
    read.wake?.();
  });
  const report: string[] = [];
  const work = (async (): Promise<void> => {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    // The banner ends with the first prompt.
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (read.text.includes(PROMPT)) {
          read.wake = undefined;
          resolve();
        } else read.wake = check;
      };
      check();
    });
    const commands = ['info status', 'info cpus', 'info registers -a', 'info virtio'];
    for (const command of commands) {
      const answer = await ask(socket, read, command);
      // Of the registers, those that say where each vCPU is and what it was doing (not the FPU's).
      const kept = command.startsWith('info registers') ? answer.split('\n').filter((line) => REGISTER_LINES.test(line)).join('\n') : answer;
      report.push(`(qemu) ${command}\n${kept}`);
    }
    // Each virtio device's path, as `info virtio` lists it ("/machine/.../virtio-backend [name]").
    const paths = [...report.at(-1)!.matchAll(/(\/machine\/\S+)\s+\[/g)].map((m) => m[1]!);
    for (const devicePath of paths) {
      for (let queue = 0; queue < queues; queue++) {
        // Not `info virtio-queue-status`: for a vhost-user device QEMU 7.2 answers it by sending the
        // back-end GET_VRING_BASE, which stops that ring (libvhost-user closes its kick and call
        // fds: the guest can never resume), and it prints last_avail_idx 0 whatever the ring holds.
        const command = `info virtio-vhost-queue-status ${devicePath} ${queue}`;
        const vhost = await ask(socket, read, command);
        report.push(`(qemu) ${command}\n${vhost}`);
        // The rings' own indexes in guest memory (16 bits at offset 2 of the avail and used rings):
        // requests the guest made available and those the back-end returned; then (EVENT_IDX) the
        // guest's used_event, after the avail ring's entries: the used index it last consumed when
        // it asked for an interrupt. used.idx = avail.idx with used_event behind it and requests
        // in flight in the guest: the back-end returned them and the guest missed the interrupt.
        const num = /\bnum:\s+(\d+)/.exec(vhost)?.[1];
        for (const ring of ['avail', 'used']) {
          const at = new RegExp(`${ring}_phys:\\s+0x([0-9a-f]+)`).exec(vhost)?.[1];
          if (at === undefined) continue;
          const base = BigInt(`0x${at}`);
          const fields: [string, bigint][] = [[`${ring}.idx`, base + RING_INDEX_OFFSET_BYTES], [`${ring}.flags`, base]];
          if (num !== undefined) {
            const event = base + 2n * RING_INDEX_OFFSET_BYTES + BigInt(num) * (ring === 'avail' ? AVAIL_ENTRY_BYTES : USED_ENTRY_BYTES);
            fields.push([ring === 'avail' ? 'used_event' : 'avail_event', event]);
          }
          for (const [name, address] of fields) {
            const xp = `xp /1hx 0x${address.toString(16)}`;
            report.push(`(qemu) ${xp}   (queue ${queue} ${name})\n${await ask(socket, read, xp)}`);
          }
        }
      }
    }
  })();
  let timer: NodeJS.Timeout | undefined;
  try {
    const outcome = await Promise.race([work.then(() => 'answered' as const), new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), timeoutMs)))]);
    if (outcome === 'late') report.push(`(the monitor stopped answering within ${timeoutMs} ms)`);
  } catch (err) {
    report.push(`(the monitor at ${monitorPath} could not be asked: ${(err as Error).message})`);
  } finally {
    clearTimeout(timer);
    socket.destroy();
  }
  work.catch(() => undefined);
  return report.join('\n').replace(/\r/g, '');
}

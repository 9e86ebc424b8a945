/**
 * The README's examples, run as written (issue 10). Every fenced block of README.md is one of:
 *   ```sh               commands: run, in order, each must exit 0;
 *   ```sh daemon        the README's first command, `strata serve`: started in the background
 *                       (stopped with SIGTERM at the end, which must exit 0);
 *   ```sh not-run-here  shown only (npm ci, a kernel module, placeholder hosts), with the reason in
 *                       the README's text;
 *   ```text             not commands.
 * Inside a run block, a command whose line ends with a `# not-run-here: why` comment is skipped
 * (qemu-system with KVM). A block without an info string, or with another one, fails the test.
 *
 * They run in a fresh temporary folder (the daemon's ./strata-data is there), with the checkout's
 * bin/ first on PATH as Set-up says, in a private network and mount namespace when unshare works:
 * the daemon listens on the README's own 127.0.0.1:7460 and :10809 without meeting any other
 * daemon, and /run (the vhost-user socket folder) is a fresh tmpfs.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, requireTool } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { assertBuilt } from './harness.js';

assertBuilt();

const README = path.join(REPO_ROOT, 'README.md');
const NOT_RUN = 'not-run-here';
const DAEMON = 'daemon';
const SHELLS = new Set(['sh', 'bash', 'shell']);
/** The ports the README names for the daemon (API, NBD, S3). */
const README_PORTS = [7460, 10809, 7480];

type BlockKind = 'run' | 'daemon' | 'shown' | 'text';

interface Block {
  /** Line of the opening fence (1-based). */
  line: number;
  info: string;
  kind: BlockKind;
  body: string;
}

interface Command {
  line: number;
  text: string;
}

function kindOf(info: string, line: number): BlockKind {
  const [lang, ...flags] = info.split(/\s+/).filter(Boolean);
  if (lang === undefined) throw new Error(`README.md:${line}: a fenced block without an info string: mark it sh, sh daemon, sh ${NOT_RUN} or text`);
  if (lang === 'text') return 'text';
  if (!SHELLS.has(lang)) throw new Error(`README.md:${line}: fenced block '${info}': use sh (run), sh ${DAEMON}, sh ${NOT_RUN} or text`);
  if (flags.length === 0) return 'run';
  if (flags.length === 1 && flags[0] === NOT_RUN) return 'shown';
  if (flags.length === 1 && flags[0] === DAEMON) return 'daemon';
  throw new Error(`README.md:${line}: unknown marks '${flags.join(' ')}' (known: ${DAEMON}, ${NOT_RUN})`);
}

/** The fenced blocks of a markdown text, classified. */
function readmeBlocks(markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const info = open[1]!.trim();
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && lines[i] !== '```'; i++) body.push(lines[i]!);
    if (i >= lines.length) throw new Error(`README.md:${start + 1}: the fenced block is not closed`);
    blocks.push({ line: start + 1, info, kind: kindOf(info, start + 1), body: body.join('\n') });
  }
  return blocks;
}

/** A block's commands: lines joined across trailing backslashes; blank and comment-only lines dropped. */
function commandsOf(block: Block): Command[] {
  const out: Command[] = [];
  const lines = block.body.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = block.line + 1 + i;
    let text = lines[i]!;
    while (text.endsWith('\\') && i + 1 < lines.length) text += `\n${lines[++i]!}`;
    if (text.trim() === '' || text.trim().startsWith('#')) continue;
    out.push({ line, text });
  }
  return out;
}

function skipped(command: Command): boolean {
  return new RegExp(`#\\s*${NOT_RUN}\\b`).test(command.text);
}

/** A block as a bash script that stops at the first command that fails, naming its README line. */
function blockScript(block: Block): string {
  const parts = ['set -o pipefail'];
  for (const command of commandsOf(block)) {
    if (skipped(command)) continue;
    const first = command.text.split('\n')[0]!.replace(/'/g, `'\\''`);
    parts.push(command.text, `__status=$?; if [ "$__status" -ne 0 ]; then echo 'README.md:${command.line}: exit status '"$__status"': ${first}' >&2; exit "$__status"; fi`);
  }
  return `${parts.join('\n')}\n`;
}

/** How to isolate the run: a command prefix that gives a private network and mount namespace, or none. */
function isolation(): string[] | undefined {
  const prefix = process.getuid?.() === 0 ? ['unshare', '--net', '--mount'] : ['unshare', '--map-root-user', '--net', '--mount'];
  const probe = spawnSync(prefix[0]!, [...prefix.slice(1), 'true'], { encoding: 'utf8' });
  return probe.status === 0 ? prefix : undefined;
}

function portFree(port: number): boolean {
  const probe = spawnSync(process.execPath, ['-e', `require('net').createServer().once('error', () => process.exit(1)).listen(${port}, '127.0.0.1', function () { this.close(); })`]);
  return probe.status === 0;
}

const markdown = readFileSync(README, 'utf8');

describe('README.md', () => {
  it('marks every block: run, the daemon, shown only (not-run-here), or text; Set-up puts bin/ on PATH; nothing says npx strata', () => {
    const blocks = readmeBlocks(markdown);
    const shells = blocks.filter((b) => b.kind !== 'text');
    expect(shells.filter((b) => b.kind === 'run').length).toBeGreaterThan(3);
    // The first command that runs is the daemon, and there is one.
    const daemons = blocks.filter((b) => b.kind === 'daemon');
    expect(daemons.length).toBe(1);
    expect(shells.find((b) => b.kind !== 'shown')).toBe(daemons[0]);
    const daemonCommands = commandsOf(daemons[0]!);
    expect(daemonCommands.length).toBe(1);
    expect(daemonCommands[0]!.text).toMatch(/^strata serve\b/);
    // Set-up: what this test does instead of running it (it runs from an installed, built checkout).
    const setUp = blocks[0]!;
    expect(setUp.kind).toBe('shown');
    expect(setUp.body).toMatch(/^npm ci\b/m);
    expect(setUp.body).toMatch(/^export PATH="\$PWD\/bin:\$PATH"/m);
    expect(statSync(path.join(REPO_ROOT, 'bin', 'strata')).mode & 0o111).not.toBe(0);
    for (const doc of [README, ...['cli.md', 'daemon.md', 'vhost-user.md', 'architecture.md'].map((f) => path.join(REPO_ROOT, 'docs', f))]) {
      if (existsSync(doc)) expect(readFileSync(doc, 'utf8'), doc).not.toMatch(/npx strata/);
    }
  });

  it.skipIf(!requireTool('jq', 'qemu-img', 'nbdinfo', 'nbdcopy'))(
    "runs the README's blocks in order against the daemon its first command starts",
    { timeout: 300_000 },
    async () => {
      const blocks = readmeBlocks(markdown);
      const daemon = blocks.find((b) => b.kind === 'daemon')!;
      const runs = blocks.filter((b) => b.kind === 'run');
      const work = tempDir();
      const prefix = isolation();
      if (prefix === undefined) {
        const busy = README_PORTS.filter((port) => !portFree(port));
        if (busy.length > 0) throw new Error(`no network namespace (unshare failed) and the README's port(s) ${busy.join(', ')} are in use: free them to run this test`);
      }
      writeFileSync(path.join(work, 'daemon.sh'), `exec ${commandsOf(daemon)[0]!.text}\n`);
      runs.forEach((block, i) => writeFileSync(path.join(work, `block-${i}.sh`), blockScript(block)));
      // The driver: namespace set-up, the daemon in the background until it listens, the blocks in
      // order (stopping at the first failure), then SIGTERM to the daemon.
      const driver = [
        'set -u',
        prefix === undefined ? ':' : 'ip link set lo up && mount -t tmpfs -o mode=0755 strata-readme-run /run',
        'bash daemon.sh > daemon.log 2>&1 &',
        'daemon=$!',
        "until grep -q 'listening url=' daemon.log; do kill -0 $daemon 2>/dev/null || break; sleep 0.05; done",
        `for i in $(seq 0 ${runs.length - 1}); do`,
        '  bash "block-$i.sh" > "block-$i.out" 2>&1; status=$?; echo $status > "block-$i.status"',
        '  [ $status -eq 0 ] || break',
        'done',
        'kill -TERM $daemon 2>/dev/null; wait $daemon; echo $? > daemon.status',
      ].join('\n');
      writeFileSync(path.join(work, 'driver.sh'), `${driver}\n`);
      const env: NodeJS.ProcessEnv = { ...process.env, PATH: [path.join(REPO_ROOT, 'bin'), path.dirname(process.execPath), process.env.PATH ?? ''].join(path.delimiter) };
      for (const name of Object.keys(env)) if (name.startsWith('STRATA_')) delete env[name];
      const [cmd, ...args] = [...(prefix ?? []), 'bash', 'driver.sh'];
      const exit = await new Promise<number | null>((resolve) => {
        const child = spawn(cmd!, args, { cwd: work, env, stdio: 'ignore' });
        child.on('close', (code) => resolve(code));
      });
      const read = (name: string) => (existsSync(path.join(work, name)) ? readFileSync(path.join(work, name), 'utf8') : '');
      expect(exit, `the driver failed; daemon log:\n${read('daemon.log')}`).toBe(0);
      runs.forEach((block, i) => {
        const status = read(`block-${i}.status`).trim();
        const where = `README.md:${block.line} (block ${i + 1} of ${runs.length} run)`;
        expect(status, `${where} ${status === '' ? 'did not run (the daemon did not start?)' : 'failed'}:\n${read(`block-${i}.out`)}\ndaemon log:\n${read('daemon.log')}`).toBe('0');
      });
      expect(read('daemon.status').trim(), `the daemon's exit after SIGTERM; its log:\n${read('daemon.log')}`).toBe('0');
    },
  );
});

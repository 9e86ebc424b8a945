/**
 * Builds (once, cached) the tiny test guest used by test/vhost-user/guest.ts: a Debian kernel and a
 * busybox initramfs with the virtio-blk modules and util-linux's blkdiscard.
 *
 * Cache: $STRATA_TEST_CACHE or ~/.cache/strata-test-guest, one directory per key
 * (`guest-<hash>`), the key covering the kernel package and version, the busybox-static and
 * util-linux versions and the /init script. A build happens in a temporary directory next to the
 * cache entry and is renamed into place, so test files building at the same time do not race: the
 * first rename wins, the others discard their copy.
 *
 * Needs: apt-get/apt-cache (the kernel .deb is fetched with `apt-get download`, no root, network to
 * the Debian mirror on the first build), dpkg-deb, tar, busybox-static, util-linux (blkdiscard), ldd.
 * Everything runs through child processes without blocking the event loop.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { expectSuccess, runAsync } from '../support/tools.js';

/** Bumped whenever the layout of a cache entry or the initramfs changes. */
const FORMAT_VERSION = 2;

/** Insmod order (dependencies first), from the kernel's drivers/{virtio,block}. */
export const VIRTIO_MODULES = [
  'kernel/drivers/virtio/virtio_ring.ko',
  'kernel/drivers/virtio/virtio.ko',
  'kernel/drivers/virtio/virtio_pci_modern_dev.ko',
  'kernel/drivers/virtio/virtio_pci_legacy_dev.ko',
  'kernel/drivers/virtio/virtio_pci.ko',
  'kernel/drivers/block/virtio_blk.ko',
] as const;

/** Where the per-run archive puts the test's script and files (see guest.ts). */
export const GUEST_SCRIPT_PATH = '/strata/test.sh';
export const GUEST_FILES_DIR = '/strata/files';

/** Console markers printed by /init; matched anywhere in a line (escape codes may precede them). */
export const MARK = {
  /** /init reached user space and loaded the drivers. */
  ready: '@@STRATA-READY@@',
  /** Prefix of every line the test script writes (stdout and stderr). */
  out: '@@STRATA-OUT@@ ',
  /** Followed by the script's exit status. */
  exit: '@@STRATA-EXIT@@ ',
} as const;

/**
 * /init: busybox sh as PID 1. util-linux's blkdiscard sits in /usr/sbin, ahead of busybox's
 * applets (all symlinked into /bin) on PATH; busybox's blkdiscard has no -z.
 */
const INIT_SCRIPT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in ${VIRTIO_MODULES.map((m) => path.posix.basename(m, '.ko')).join(' ')}; do
  insmod /modules/$m.ko || echo "insmod $m failed"
done
# the virtio-blk probe is synchronous, but give udev-less devtmpfs a moment anyway
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
echo "${MARK.ready}"
cd /tmp
( sh -c '. /strata/prelude.sh; . ${GUEST_SCRIPT_PATH}' </dev/null 2>&1; echo $? > /tmp/.rc ) | while IFS= read -r line || [ -n "$line" ]; do
  echo "${MARK.out}$line"
done
echo "${MARK.exit}$(cat /tmp/.rc)"
sync
poweroff -f
`;

/**
 * Sourced before the test's script. Busybox's shell prefers its own applets to PATH, so a bare
 * `blkdiscard` would be busybox's (no -z): route it to util-linux's.
 */
const PRELUDE_SCRIPT = `blkdiscard() { /usr/sbin/blkdiscard "$@"; }
`;

export interface GuestAssets {
  /** The cache entry directory. */
  dir: string;
  kernelPath: string;
  /** gzip'd newc cpio; a run appends its own (uncompressed) archive after it. */
  baseInitrdPath: string;
  kernelPackage: string;
  kernelVersion: string;
}

export function guestCacheRoot(): string {
  const fromEnv = process.env.STRATA_TEST_CACHE;
  if (fromEnv !== undefined && fromEnv !== '') return path.resolve(fromEnv);
  return path.join(os.homedir(), '.cache', 'strata-test-guest');
}

async function ok(cmd: string, args: readonly string[], what: string, cwd?: string): Promise<string> {
  const result = await runAsync(cmd, args, { ...(cwd !== undefined ? { cwd } : {}), timeoutMs: 600_000 });
  return expectSuccess(result, what).stdout;
}

/**
 * The kernel package linux-image-amd64 depends on (e.g. linux-image-6.1.0-56-amd64) and its version
 * (one apt-cache call: the metapackage pins it with "(= VERSION)"). STRATA_TEST_KERNEL_PACKAGE
 * names another package.
 */
async function kernelPackage(): Promise<{ name: string; version: string }> {
  const override = process.env.STRATA_TEST_KERNEL_PACKAGE;
  if (override === undefined || override === '') {
    const show = await ok('apt-cache', ['show', '--no-all-versions', 'linux-image-amd64'], 'apt-cache show linux-image-amd64');
    const dep = /^Depends:.*?\b(linux-image-[0-9][^\s,]*-amd64)(?:\s*\(=\s*([^)\s]+)\))?/m.exec(show);
    if (dep?.[1] === undefined) throw new Error(`no kernel package in 'apt-cache show linux-image-amd64' (run apt-get update?):\n${show}`);
    if (dep[2] !== undefined) return { name: dep[1], version: dep[2] };
    return { name: dep[1], version: await candidateVersion(dep[1]) };
  }
  return { name: override, version: await candidateVersion(override) };
}

/**
 * kernelPackage(), remembered in the cache root until the apt lists change (apt-cache takes seconds
 * on a busy machine; every test file would pay it).
 */
async function kernelPackageCached(): Promise<{ name: string; version: string }> {
  const override = process.env.STRATA_TEST_KERNEL_PACKAGE ?? '';
  let stamp: string;
  try {
    const lists = await stat('/var/lib/apt/lists');
    stamp = `${lists.mtimeMs}:${override}`;
  } catch {
    return kernelPackage();
  }
  const memo = path.join(guestCacheRoot(), 'kernel-package.json');
  try {
    const saved = JSON.parse(await readFile(memo, 'utf8')) as { stamp?: unknown; name?: unknown; version?: unknown };
    if (saved.stamp === stamp && typeof saved.name === 'string' && typeof saved.version === 'string') {
      return { name: saved.name, version: saved.version };
    }
  } catch {
    // none yet
  }
  const kernel = await kernelPackage();
  await mkdir(guestCacheRoot(), { recursive: true });
  const tmp = `${memo}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify({ stamp, ...kernel }));
  await rename(tmp, memo);
  return kernel;
}

async function candidateVersion(name: string): Promise<string> {
  const policy = await ok('apt-cache', ['policy', name], `apt-cache policy ${name}`);
  const version = /Candidate:\s*(\S+)/.exec(policy)?.[1];
  if (version === undefined || version === '(none)') {
    throw new Error(`no candidate version for ${name} (run apt-get update?):\n${policy}`);
  }
  return version;
}

async function installedVersion(pkg: string): Promise<string> {
  const out = await ok('dpkg-query', ['-W', '-f=${Version}', pkg], `dpkg-query ${pkg} (is it installed?)`);
  return out.trim();
}

// ---- newc cpio writer ---------------------------------------------------------------------------

export interface CpioEntry {
  /** Path inside the archive, without a leading slash. */
  name: string;
  /** Regular file contents; undefined for a directory. */
  data?: Uint8Array;
  /** Permission bits (default 0o755 for directories and 0o644 for files). */
  perm?: number;
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** An uncompressed newc ("070701") archive, ending with the TRAILER!!! entry. */
export function cpioNewc(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const push = (name: string, mode: number, data: Uint8Array, nlink: number): void => {
    const nameBytes = Buffer.from(`${name}\0`, 'utf8');
    const header =
      '070701' +
      [ino++, mode, 0, 0, nlink, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0].map(hex8).join('');
    parts.push(Buffer.from(header, 'ascii'), nameBytes, Buffer.alloc(pad4(110 + nameBytes.length)));
    parts.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength), Buffer.alloc(pad4(data.length)));
  };
  for (const entry of entries) {
    const name = entry.name.replace(/^\/+/, '');
    if (entry.data === undefined) push(name, 0o040000 | (entry.perm ?? 0o755), new Uint8Array(0), 2);
    else push(name, 0o100000 | (entry.perm ?? 0o644), entry.data, 1);
  }
  push('TRAILER!!!', 0, new Uint8Array(0), 1);
  return Buffer.concat(parts);
}

/** Directory entries for every parent of the given paths (cpio needs them before the files). */
export function parentDirs(paths: readonly string[]): CpioEntry[] {
  const dirs = new Set<string>();
  for (const p of paths) {
    const parts = p.replace(/^\/+/, '').split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  return [...dirs].sort().map((name) => ({ name }));
}

// ---- build ---------------------------------------------------------------------------------------

/** Shared libraries `ldd` lists for a binary (absolute paths as the binary will look them up). */
async function lddLibraries(binary: string): Promise<string[]> {
  const out = await ok('ldd', [binary], `ldd ${binary}`);
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m?.[1] !== undefined) libs.push(m[1]);
  }
  return libs;
}

async function findFile(dir: string, pattern: RegExp): Promise<string> {
  for (const name of await readdir(dir)) if (pattern.test(name)) return path.join(dir, name);
  throw new Error(`no file matching ${pattern} in ${dir}`);
}

/**
 * The uncompressed ELF kernel inside a bzImage, when it has a PVH entry note (Debian's has
 * CONFIG_PVH): QEMU then boots it directly, skipping the in-guest XZ decompression (about 4 s of a
 * 7 s boot under TCG). undefined (use the bzImage) when xz is missing or anything does not fit.
 */
async function extractPvhKernel(bzImage: string, work: string): Promise<string | undefined> {
  const data = await readFile(bzImage);
  const at = data.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
  if (at < 0) return undefined;
  const payload = path.join(work, 'payload.xz');
  const elf = path.join(work, 'vmlinux');
  await writeFile(payload, data.subarray(at));
  const r = await runAsync('sh', ['-c', 'xz -dc --single-stream "$1" > "$2"', 'sh', payload, elf], { timeoutMs: 120_000 });
  if (r.code !== 0) return undefined;
  const head = await readFile(elf);
  if (head.length < 64 || head.readUInt32BE(0) !== 0x7f454c46) return undefined;
  if (!hasPvhNote(head)) return undefined;
  return elf;
}

/** True when an ELF64 little-endian file has a "Xen" note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY). */
function hasPvhNote(elf: Buffer): boolean {
  if (elf[4] !== 2 || elf[5] !== 1) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length || elf.readUInt32LE(ph) !== 4 /* PT_NOTE */) continue;
    let off = Number(elf.readBigUInt64LE(ph + 8));
    const end = off + Number(elf.readBigUInt64LE(ph + 32));
    while (off + 12 <= end && end <= elf.length) {
      const namesz = elf.readUInt32LE(off);
      const descsz = elf.readUInt32LE(off + 4);
      const type = elf.readUInt32LE(off + 8);
      const name = elf.subarray(off + 12, off + 12 + namesz).toString('latin1');
      if (name.startsWith('Xen') && type === 18) return true;
      off += 12 + Math.ceil(namesz / 4) * 4 + Math.ceil(descsz / 4) * 4;
    }
  }
  return false;
}

async function build(target: string, kernel: { name: string; version: string }, busyboxPath: string, blkdiscardPath: string): Promise<void> {
  const root = path.dirname(target);
  await mkdir(root, { recursive: true });
  const work = await mkdtemp(path.join(root, '.build-'));
  try {
    // 1. kernel: download the .deb and take vmlinuz and the virtio modules out of it
    await ok('apt-get', ['download', `${kernel.name}=${kernel.version}`], `apt-get download ${kernel.name}`, work);
    const deb = await findFile(work, /^linux-image-.*\.deb$/);
    const extract = path.join(work, 'x');
    await mkdir(extract);
    const members = ['./boot/vmlinuz-*', ...VIRTIO_MODULES.map((m) => `./lib/modules/*/${m}`)];
    const quoted = members.map((m) => `'${m}'`).join(' ');
    await ok('sh', ['-c', `dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards ${quoted}`, 'sh', deb, extract], 'extract kernel');
    const vmlinuz = await findFile(path.join(extract, 'boot'), /^vmlinuz-/);
    const modulesRoot = await findFile(path.join(extract, 'lib', 'modules'), /./);

    // 2. initramfs: busybox, the modules, blkdiscard and its libraries, /init
    const files: CpioEntry[] = [];
    files.push({ name: 'init', data: Buffer.from(INIT_SCRIPT, 'utf8'), perm: 0o755 });
    files.push({ name: 'strata/prelude.sh', data: Buffer.from(PRELUDE_SCRIPT, 'utf8') });
    files.push({ name: 'bin/busybox', data: await readFile(busyboxPath), perm: 0o755 });
    for (const m of VIRTIO_MODULES) {
      files.push({ name: `modules/${path.posix.basename(m)}`, data: await readFile(path.join(modulesRoot, m)) });
    }
    files.push({ name: 'usr/sbin/blkdiscard', data: await readFile(blkdiscardPath), perm: 0o755 });
    for (const lib of await lddLibraries(blkdiscardPath)) {
      files.push({ name: lib.replace(/^\/+/, ''), data: await readFile(await realpath(lib)), perm: 0o755 });
    }
    const dirs = parentDirs(files.map((f) => f.name));
    for (const d of ['proc', 'sys', 'dev', 'tmp', 'run', 'strata']) if (!dirs.some((e) => e.name === d)) dirs.push({ name: d });
    const archive = cpioNewc([...dirs, ...files]);
    const gz = gzipSync(archive, { level: 6 });
    // pad to 512 bytes with zeros: the kernel skips zeros between concatenated archives and wants
    // an uncompressed archive to start 4-byte aligned
    const padded = Buffer.concat([gz, Buffer.alloc((512 - (gz.length % 512)) % 512)]);

    const out = path.join(work, 'out');
    await mkdir(out);
    const kernelFile = await extractPvhKernel(vmlinuz, work);
    await copyFile(kernelFile ?? vmlinuz, path.join(out, 'kernel'));
    await writeFile(path.join(out, 'initrd-base.img'), padded);
    await writeFile(
      path.join(out, 'manifest.json'),
      JSON.stringify({ formatVersion: FORMAT_VERSION, kernelPackage: kernel.name, kernelVersion: kernel.version, pvh: kernelFile !== undefined, builtAt: new Date().toISOString() }, null, 2),
    );
    try {
      await rename(out, target);
    } catch (e) {
      // another process finished first: keep theirs
      if (!existsSync(path.join(target, 'manifest.json'))) throw e;
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

let assetsPromise: Promise<GuestAssets> | undefined;

/**
 * The kernel and base initramfs, built on first use and cached on disk (and memoised in the
 * process). Rejects with a clear message when apt or the packages are missing.
 */
export function prepareGuestAssets(): Promise<GuestAssets> {
  assetsPromise ??= (async () => {
    const kernel = await kernelPackageCached();
    const busyboxPath = '/bin/busybox';
    const blkdiscardPath = ['/usr/sbin/blkdiscard', '/sbin/blkdiscard'].find((p) => existsSync(p));
    if (!existsSync(busyboxPath)) throw new Error('guest build: /bin/busybox missing (install busybox-static)');
    if (blkdiscardPath === undefined) throw new Error('guest build: blkdiscard missing (install util-linux)');
    const busyboxInfo = await stat(busyboxPath);
    const key = createHash('sha256')
      .update(
        JSON.stringify({
          FORMAT_VERSION,
          kernel,
          busybox: await installedVersion('busybox-static'),
          busyboxSize: busyboxInfo.size,
          utilLinux: await installedVersion('util-linux'),
          modules: VIRTIO_MODULES,
          init: INIT_SCRIPT,
          prelude: PRELUDE_SCRIPT,
        }),
      )
      .digest('hex')
      .slice(0, 16);
    const dir = path.join(guestCacheRoot(), `guest-${key}`);
    if (!existsSync(path.join(dir, 'manifest.json'))) await build(dir, kernel, busyboxPath, blkdiscardPath);
    return {
      dir,
      kernelPath: path.join(dir, 'kernel'),
      baseInitrdPath: path.join(dir, 'initrd-base.img'),
      kernelPackage: kernel.name,
      kernelVersion: kernel.version,
    };
  })();
  assetsPromise.catch(() => {
    assetsPromise = undefined; // let a later call retry
  });
  return assetsPromise;
}

/**
 * fio for the test rig's guest (test/vhost-user/guest.ts): the host's own /usr/bin/fio and every
 * shared library `ldd` lists, carried as extra files in the guest's per-run initramfs archive
 * (under /strata/files/fio/), and started through the carried dynamic loader with
 * `--library-path`, so nothing in the cached guest image changes. Debian's fio links ~60 libraries
 * (~85 MB: ceph, gluster, rdma, icu); the guest unpacks them into RAM at boot, so the guest needs
 * about 512 MiB. A static fio would be smaller, but Debian ships none and there is no network
 * here to build one; a 9p share would need 9p modules the cached guest does not have.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { basename } from 'node:path';

/** Where the files land in the guest (GUEST_FILES_DIR of guest-build.ts, then this folder). */
const GUEST_FIO_DIR = '/strata/files/fio';

export interface GuestFio {
  /** Extra files for GuestOptions.files (names relative to /strata/files). */
  files: Record<string, Uint8Array>;
  /** Guest shell lines to run once before `command` (files arrive without the execute bit). */
  setup: string;
  /** The shell words that start fio in the guest (the loader, its library path, the binary). */
  command: string;
  /** The host's fio version (the guest runs the same binary). */
  version: string;
}

/** The absolute library paths in `ldd` output, with the name the loader will look for. */
export function lddLibraries(lddOutput: string): { soname: string; path: string }[] {
  const libs: { soname: string; path: string }[] = [];
  for (const line of lddOutput.split('\n')) {
    const named = /^\s*(\S+)\s+=>\s+(\/\S+)/.exec(line);
    if (named !== null) {
      libs.push({ soname: named[1]!, path: named[2]! });
      continue;
    }
    const loader = /^\s*(\/\S+)\s+\(/.exec(line);
    if (loader !== null) libs.push({ soname: basename(loader[1]!), path: loader[1]! });
  }
  return libs;
}

/** Collects fio and its libraries (read once per bench run: ~85 MB). */
export function guestFio(fioPath = '/usr/bin/fio'): GuestFio {
  const files: Record<string, Uint8Array> = { 'fio/fio': readFileSync(fioPath) };
  let loader: string | undefined;
  for (const lib of lddLibraries(execFileSync('ldd', [fioPath], { encoding: 'utf8' }))) {
    files[`fio/lib/${lib.soname}`] = readFileSync(realpathSync(lib.path));
    if (lib.soname.startsWith('ld-linux')) loader = lib.soname;
  }
  if (loader === undefined) throw new Error(`ldd ${fioPath} names no dynamic loader: is it a static binary? Then run it directly`);
  const version = execFileSync(fioPath, ['--version'], { encoding: 'utf8' }).trim();
  return {
    files,
    setup: `chmod 755 ${GUEST_FIO_DIR}/lib/${loader}`,
    command: `${GUEST_FIO_DIR}/lib/${loader} --library-path ${GUEST_FIO_DIR}/lib ${GUEST_FIO_DIR}/fio`,
    version,
  };
}

/** The fio fields the guest prints per row: read KiB, read IOPS, write KiB, write IOPS (terse v3 fields 6, 8, 47, 49). */
export function parseGuestFioLine(line: string, bs: string): { iops: number; bytes: number; requests: number } {
  const [readKiB, readIops, writeKiB, writeIops] = line.trim().split(';').map(Number);
  if ([readKiB, readIops, writeKiB, writeIops].some((v) => v === undefined || !Number.isFinite(v))) throw new Error(`not a fio result line: '${line}'`);
  const bytes = (readKiB! + writeKiB!) * 1024;
  return { iops: readIops! + writeIops!, bytes, requests: Math.round(bytes / blockBytes(bs)) };
}

/** fio's block size spelling (4k, 1M) in bytes. */
export function blockBytes(bs: string): number {
  const m = /^(\d+)([kKmM]?)$/.exec(bs);
  if (m === null) throw new Error(`block size '${bs}' is not N, Nk or NM`);
  return Number(m[1]) * (m[2] === '' ? 1 : m[2]!.toLowerCase() === 'k' ? 1024 : 1024 * 1024);
}

/**
 * What the first bytes of an image to import say it is. Strata imports raw and qcow2; anything
 * else (another VM disk format, a compressed or archived image) would otherwise be taken for raw
 * and become a volume holding the container's bytes, which no guest can boot: `volume import`
 * refuses those unless `--format raw` says the bytes are meant as they are. The signatures are
 * the ones qemu-img probes for (block/vmdk.c, vdi.c, vhdx.c, vpc.c, qed.c, parallels.c, crypto
 * LUKS) plus the compressors and tar, at their offsets.
 */

/** How many leading bytes the checks need (tar's "ustar" sits at 257). */
export const FORMAT_PEEK_BYTES = 512;

export type DetectedFormat = { format: 'raw' | 'qcow2' } | { format: 'foreign'; name: string; hint: (file: string, volume: string) => string };

interface Signature {
  name: string;
  offset: number;
  bytes: Uint8Array;
  kind: 'disk' | 'compressed' | 'archive';
  /** The command that decompresses stdin to stdout (compressed kinds). */
  decompress?: string;
}

const ascii = (text: string): Uint8Array => Uint8Array.from(text, (c) => c.charCodeAt(0));

const QCOW2_MAGIC = Uint8Array.of(0x51, 0x46, 0x49, 0xfb);

const SIGNATURES: readonly Signature[] = [
  { name: 'VMDK', offset: 0, bytes: ascii('KDMV'), kind: 'disk' },
  { name: 'VMDK (descriptor)', offset: 0, bytes: ascii('# Disk DescriptorFile'), kind: 'disk' },
  { name: 'VMDK (ESX COWD)', offset: 0, bytes: ascii('COWD'), kind: 'disk' },
  { name: 'VDI', offset: 0x40, bytes: Uint8Array.of(0x7f, 0x10, 0xda, 0xbe), kind: 'disk' },
  { name: 'VHDX', offset: 0, bytes: ascii('vhdxfile'), kind: 'disk' },
  { name: 'VHD (dynamic)', offset: 0, bytes: ascii('conectix'), kind: 'disk' },
  { name: 'QED', offset: 0, bytes: ascii('QED\0'), kind: 'disk' },
  { name: 'LUKS', offset: 0, bytes: Uint8Array.of(0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe), kind: 'disk' },
  { name: 'Parallels', offset: 0, bytes: ascii('WithoutFreeSpace'), kind: 'disk' },
  { name: 'Parallels', offset: 0, bytes: ascii('WithouFreSpacExt'), kind: 'disk' },
  { name: 'gzip-compressed', offset: 0, bytes: Uint8Array.of(0x1f, 0x8b, 0x08), kind: 'compressed', decompress: 'gzip -dc' },
  { name: 'xz-compressed', offset: 0, bytes: Uint8Array.of(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00), kind: 'compressed', decompress: 'xz -dc' },
  { name: 'zstd-compressed', offset: 0, bytes: Uint8Array.of(0x28, 0xb5, 0x2f, 0xfd), kind: 'compressed', decompress: 'zstd -dc' },
  { name: 'a tar archive (an OVA?)', offset: 257, bytes: ascii('ustar'), kind: 'archive' },
];

function at(head: Uint8Array, offset: number, bytes: Uint8Array): boolean {
  if (head.length < offset + bytes.length) return false;
  for (let i = 0; i < bytes.length; i++) if (head[offset + i] !== bytes[i]) return false;
  return true;
}

/** bzip2: "BZh", a block size digit, then the first block's magic (pi). */
function isBzip2(head: Uint8Array): boolean {
  const d = head[3];
  return at(head, 0, ascii('BZh')) && d !== undefined && d >= 0x31 && d <= 0x39 && at(head, 4, Uint8Array.of(0x31, 0x41, 0x59, 0x26, 0x53, 0x59));
}

function hintFor(sig: Signature): (file: string, volume: string) => string {
  const name = (file: string) => (file === '-' ? 'the input' : `'${file}'`);
  switch (sig.kind) {
    case 'compressed':
      return (file, volume) =>
        file === '-'
          ? `decompress it on the way in: ... | ${sig.decompress} | strata volume import - ${volume}`
          : `decompress it on the way in: ${sig.decompress} '${file}' | strata volume import - ${volume}`;
    case 'archive':
      return (file) => `unpack ${name(file)} and import the disk image inside it (convert a VMDK with qemu-img convert -O qcow2 first)`;
    case 'disk':
      return (file, volume) =>
        `convert it first: qemu-img convert -O qcow2 ${file === '-' ? 'IMAGE' : `'${file}'`} IMAGE.qcow2 && strata volume import IMAGE.qcow2 ${volume}; --format raw imports its bytes as they are`;
  }
}

/** The format the first bytes of an image show (FORMAT_PEEK_BYTES of them, fewer for a short input). */
export function detectImageFormat(head: Uint8Array): DetectedFormat {
  if (at(head, 0, QCOW2_MAGIC)) return { format: 'qcow2' };
  for (const sig of SIGNATURES) {
    if (at(head, sig.offset, sig.bytes)) return { format: 'foreign', name: sig.kind === 'disk' ? `a ${sig.name} image` : sig.name, hint: hintFor(sig) };
  }
  if (isBzip2(head)) {
    return { format: 'foreign', name: 'bzip2-compressed', hint: hintFor({ name: 'bzip2', offset: 0, bytes: new Uint8Array(0), kind: 'compressed', decompress: 'bzip2 -dc' }) };
  }
  return { format: 'raw' };
}

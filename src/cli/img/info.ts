/** strata img info: what qemu-img info prints, in its human and JSON layouts. */
import type { Qcow2Info, Qcow2SnapshotInfo } from '../../../formats/qcow2/types.js';
import { expectPositionals, parseArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { OUTPUT_OPTIONS, formatJson, outputFormatOf, qemuSizeString, type Console } from '../output.js';
import { asQcow2, combineBackingPath, openImage, type ChainLayer } from './open-image.js';
import { formatSnapshotTable } from './snapshot.js';

const COMMAND = 'img info';

const HELP = `Usage: strata img info [-f FMT] [--output=human|json] [--backing-chain] [-U] FILE

Shows an image's format, sizes, backing file, snapshots and format-specific details, as
qemu-img info does (JSON field names are qemu-img's).

Options:
  -f FMT            image format (qcow2 or raw; probed when not given)
  --output=FORMAT   human (default) or json; --json is the same as --output=json
  --backing-chain   show every image of the backing chain, top first
  -U, --force-share open even if another process uses the image (no locks are taken)
`;

/** qemu-img info's ImageInfo object, keys in the order qemu-img 7.2 prints them. */
export type ImageInfoJson = Record<string, unknown>;

function snapshotJson(s: Qcow2SnapshotInfo): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (s.icount !== undefined) out['icount'] = s.icount;
  out['vm-clock-nsec'] = s.vmClockNsec % 1e9;
  out['name'] = s.name;
  out['date-sec'] = s.dateSec;
  out['date-nsec'] = s.dateNsec;
  out['vm-clock-sec'] = Math.floor(s.vmClockNsec / 1e9);
  out['id'] = s.id;
  out['vm-state-size'] = s.vmStateSizeBytes;
  return out;
}

function formatSpecificData(info: Qcow2Info): Record<string, unknown> {
  const data: Record<string, unknown> = { compat: info.compat, 'compression-type': info.compressionType };
  if (info.version >= 3) data['lazy-refcounts'] = info.lazyRefcounts;
  data['refcount-bits'] = info.refcountBits;
  if (info.version >= 3) {
    data['corrupt'] = info.corrupt;
    data['extended-l2'] = info.extendedL2;
  }
  if (info.dataFile !== undefined) data['data-file'] = info.dataFile;
  return data;
}

/** The ImageInfo object for one opened layer. */
export async function imageInfoJson(layer: ChainLayer): Promise<ImageInfoJson> {
  const image = layer.image;
  const qcow2 = asQcow2(image);
  const info = qcow2?.info();
  const out: ImageInfoJson = {};
  if (info !== undefined && info.snapshots.length > 0) out['snapshots'] = info.snapshots.map(snapshotJson);
  if (info?.backingFile !== undefined && info.backingFormat !== undefined) {
    out['backing-filename-format'] = info.backingFormat;
  }
  out['virtual-size'] = image.sizeBytes;
  out['filename'] = layer.path;
  if (qcow2 !== undefined) out['cluster-size'] = qcow2.clusterSizeBytes;
  out['format'] = layer.formatName;
  out['actual-size'] = await image.file.allocatedBytes();
  if (info !== undefined) out['format-specific'] = { type: 'qcow2', data: formatSpecificData(info) };
  if (info?.backingFile !== undefined) {
    out['full-backing-filename'] = combineBackingPath(layer.path, info.backingFile);
    out['backing-filename'] = info.backingFile;
  }
  out['dirty-flag'] = info?.dirty ?? false;
  return out;
}

function humanValue(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** qemu-img info's human layout for one image. */
export function formatInfoHuman(info: ImageInfoJson, snapshots: Qcow2SnapshotInfo[]): string {
  const lines: string[] = [];
  const virtual = info['virtual-size'] as number;
  lines.push(`image: ${String(info['filename'])}`);
  lines.push(`file format: ${String(info['format'])}`);
  lines.push(`virtual size: ${qemuSizeString(virtual)} (${virtual} bytes)`);
  lines.push(`disk size: ${qemuSizeString(info['actual-size'] as number)}`);
  if (info['cluster-size'] !== undefined) lines.push(`cluster_size: ${String(info['cluster-size'])}`);
  if (info['dirty-flag'] === true) lines.push('cleanly shut down: no');
  const backing = info['backing-filename'];
  if (typeof backing === 'string') {
    const full = info['full-backing-filename'];
    const actual = typeof full === 'string' && full !== backing ? ` (actual path: ${full})` : '';
    lines.push(`backing file: ${backing}${actual}`);
  }
  if (info['backing-filename-format'] !== undefined) {
    lines.push(`backing file format: ${String(info['backing-filename-format'])}`);
  }
  if (snapshots.length > 0) {
    lines.push('Snapshot list:');
    lines.push(formatSnapshotTable(snapshots).slice(0, -1));
  }
  const specific = info['format-specific'] as { data: Record<string, unknown> } | undefined;
  if (specific !== undefined) {
    lines.push('Format specific information:');
    for (const [key, value] of Object.entries(specific.data)) {
      lines.push(`    ${key.replace(/-/g, ' ')}: ${humanValue(value)}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

async function run(argv: string[], con: Console): Promise<number> {
  const args = parseArgs(
    argv,
    [
      { short: 'f', value: true },
      ...OUTPUT_OPTIONS,
      { long: 'backing-chain' },
      { short: 'U', long: 'force-share', name: 'U' },
    ],
    COMMAND,
  );
  const output = outputFormatOf(args, COMMAND);
  expectPositionals(args, COMMAND, ['FILE']);
  const path = args.positionals[0] as string;
  const chain = args.has('backing-chain');
  const opened = await openImage(path, {
    formatName: args.value('f'),
    readOnly: true,
    forceShare: args.has('U'),
    ignoreBacking: !chain,
  });
  try {
    const layers = chain ? opened.layers : opened.layers.slice(0, 1);
    const infos: ImageInfoJson[] = [];
    const human: string[] = [];
    for (const layer of layers) {
      const info = await imageInfoJson(layer);
      infos.push(info);
      human.push(formatInfoHuman(info, asQcow2(layer.image)?.info().snapshots ?? []));
    }
    if (output === 'json') con.stdout(formatJson(chain ? infos : infos[0]));
    else con.stdout(human.join('\n'));
  } finally {
    await opened.close();
  }
  return 0;
}

export const infoCommand: Subcommand = {
  name: 'info',
  summary: 'show an image\'s format, sizes, backing file and snapshots',
  help: HELP,
  run,
};

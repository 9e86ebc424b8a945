/**
 * qemu-img's -o option lists ("cluster_size=64k,lazy_refcounts=on"), as create and convert take
 * them, turned into Qcow2CreateOptions; and the "Formatting '...', fmt=..." line qemu-img prints.
 */
import { parseSizeBytes } from '../../core/units.js';
import type { Qcow2CreateOptions } from '../../../formats/qcow2/types.js';
import { UsageError } from '../errors.js';
import type { FormatName } from './open-image.js';

/** Splits "a=1,b=x,,y" into pairs; ",," is a literal comma as in QEMU. */
export function splitOptionList(text: string): Array<[string, string | undefined]> {
  const items: string[] = [];
  let current = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (ch === ',') {
      if (text[i + 1] === ',') {
        current += ',';
        i++;
        continue;
      }
      items.push(current);
      current = '';
      continue;
    }
    current += ch;
  }
  items.push(current);
  return items
    .filter((item) => item.length > 0)
    .map((item) => {
      const eq = item.indexOf('=');
      return eq < 0 ? [item, undefined] : [item.slice(0, eq), item.slice(eq + 1)];
    });
}

const QCOW2_OPTIONS = [
  'backing_file',
  'backing_fmt',
  'cluster_size',
  'compat',
  'compression_type',
  'extended_l2',
  'lazy_refcounts',
  'preallocation',
  'refcount_bits',
  'size',
] as const;
const RAW_OPTIONS = ['preallocation', 'size'] as const;

export function optionHelp(format: FormatName): string {
  if (format === 'raw') {
    return [
      'Supported raw options:',
      '  preallocation=<str>    - Preallocation mode (allowed values: off)',
      '  size=<size>            - Virtual disk size',
      '',
    ].join('\n');
  }
  return [
    'Supported qcow2 options:',
    '  backing_file=<str>     - File name of a base image',
    '  backing_fmt=<str>      - Image format of the base image',
    '  cluster_size=<size>    - qcow2 cluster size',
    '  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])',
    '  compression_type=<str> - Compression method used for image cluster compression (zlib or zstd)',
    '  extended_l2=<bool (on/off)> - Extended L2 tables',
    '  lazy_refcounts=<bool (on/off)> - Postpone refcount updates',
    '  preallocation=<str>    - Preallocation mode (allowed values: off)',
    '  refcount_bits=<num>    - Width of a reference count entry in bits',
    '  size=<size>            - Virtual disk size',
    '',
  ].join('\n');
}

/** The -o values as given (for the Formatting line) and as parsed. */
export interface ParsedCreateOptions {
  given: Map<string, string>;
  helpRequested: boolean;
  sizeBytes: number | undefined;
  clusterSizeBytes: number | undefined;
  refcountBits: number | undefined;
  compat: '0.10' | '1.1' | undefined;
  lazyRefcounts: boolean | undefined;
  extendedL2: boolean | undefined;
  compressionType: 'zlib' | 'zstd' | undefined;
  backingFile: string | undefined;
  backingFormat: string | undefined;
}

function optionError(message: string): UsageError {
  return new UsageError(message, "'strata img create -f FMT -o help' lists the options");
}

function parseBool(name: string, value: string): boolean {
  if (value === 'on' || value === 'yes' || value === 'true') return true;
  if (value === 'off' || value === 'no' || value === 'false') return false;
  throw optionError(`parameter '${name}' expects 'on' or 'off', not '${value}'`);
}

/** Parses a byte size as qemu-img does, failing with a message that shows the accepted forms. */
export function parseSizeArg(text: string, what: string): number {
  const bytes = parseSizeBytes(text);
  if (bytes === undefined || !Number.isInteger(bytes)) {
    throw new UsageError(
      `invalid ${what} '${text}'`,
      'give a number of bytes, optionally with a k, M, G, T or P suffix',
    );
  }
  return bytes;
}

/** Parses every -o given (later ones win for the same key, as in qemu-img). */
export function parseCreateOptions(lists: readonly string[], format: FormatName): ParsedCreateOptions {
  const result: ParsedCreateOptions = {
    given: new Map(),
    helpRequested: false,
    sizeBytes: undefined,
    clusterSizeBytes: undefined,
    refcountBits: undefined,
    compat: undefined,
    lazyRefcounts: undefined,
    extendedL2: undefined,
    compressionType: undefined,
    backingFile: undefined,
    backingFormat: undefined,
  };
  const allowed: readonly string[] = format === 'qcow2' ? QCOW2_OPTIONS : RAW_OPTIONS;
  for (const list of lists) {
    for (const [name, value] of splitOptionList(list)) {
      if (name === 'help' || name === '?') {
        result.helpRequested = true;
        continue;
      }
      if (!allowed.includes(name)) {
        throw optionError(`invalid parameter '${name}' for ${format}`);
      }
      if (value === undefined) {
        throw optionError(`parameter '${name}' needs a value (${name}=...)`);
      }
      result.given.set(name, value);
      switch (name) {
        case 'size':
          result.sizeBytes = parseSizeArg(value, 'size');
          break;
        case 'cluster_size':
          result.clusterSizeBytes = parseSizeArg(value, 'cluster_size');
          break;
        case 'refcount_bits': {
          const bits = Number(value);
          if (!/^\d+$/.test(value) || !Number.isSafeInteger(bits)) {
            throw optionError(`refcount_bits expects a number, not '${value}'`);
          }
          result.refcountBits = bits;
          break;
        }
        case 'compat':
          if (value === '0.10' || value === 'v2') result.compat = '0.10';
          else if (value === '1.1' || value === 'v3') result.compat = '1.1';
          else throw optionError(`invalid compat level '${value}' (use 0.10/v2 or 1.1/v3)`);
          break;
        case 'lazy_refcounts':
          result.lazyRefcounts = parseBool(name, value);
          break;
        case 'extended_l2':
          result.extendedL2 = parseBool(name, value);
          break;
        case 'compression_type':
          if (value !== 'zlib' && value !== 'zstd') {
            throw optionError(`invalid compression_type '${value}' (use zlib or zstd)`);
          }
          result.compressionType = value;
          break;
        case 'backing_file':
          result.backingFile = value;
          break;
        case 'backing_fmt':
          result.backingFormat = value;
          break;
        case 'preallocation':
          if (value !== 'off') {
            throw new UsageError(`preallocation=${value} is not supported`, 'only preallocation=off is');
          }
          break;
      }
    }
  }
  return result;
}

/** The Qcow2CreateOptions for a parsed -o list and a final size and backing. */
export function toQcow2CreateOptions(
  parsed: ParsedCreateOptions,
  sizeBytes: number,
  backing: { file: string | undefined; format: string | undefined },
): Qcow2CreateOptions {
  const options: Qcow2CreateOptions = { sizeBytes };
  if (parsed.clusterSizeBytes !== undefined) options.clusterSizeBytes = parsed.clusterSizeBytes;
  if (parsed.refcountBits !== undefined) options.refcountBits = parsed.refcountBits;
  if (parsed.compat !== undefined) options.compat = parsed.compat;
  if (parsed.lazyRefcounts !== undefined) options.lazyRefcounts = parsed.lazyRefcounts;
  if (parsed.extendedL2 !== undefined) options.extendedL2 = parsed.extendedL2;
  if (parsed.compressionType !== undefined) options.compressionType = parsed.compressionType;
  if (backing.file !== undefined) options.backingFile = backing.file;
  if (backing.format !== undefined) options.backingFormat = backing.format;
  return options;
}

/** qemu-img's "Formatting 'F', fmt=qcow2 cluster_size=65536 ..." line, in qemu-img's order. */
export function formattingLine(
  path: string,
  format: FormatName,
  parsed: ParsedCreateOptions,
  sizeBytes: number,
  backing: { file: string | undefined; format: string | undefined },
): string {
  const parts: string[] = [`fmt=${format}`];
  const given = parsed.given;
  if (format === 'qcow2') {
    parts.push(`cluster_size=${parsed.clusterSizeBytes ?? 65536}`);
    parts.push(`extended_l2=${given.get('extended_l2') ?? 'off'}`);
    if (given.has('preallocation')) parts.push(`preallocation=${given.get('preallocation')}`);
    parts.push(`compression_type=${given.get('compression_type') ?? 'zlib'}`);
    parts.push(`size=${sizeBytes}`);
    if (backing.file !== undefined) parts.push(`backing_file=${backing.file}`);
    if (backing.format !== undefined) parts.push(`backing_fmt=${backing.format}`);
    if (given.has('compat')) parts.push(`compat=${given.get('compat')}`);
    parts.push(`lazy_refcounts=${given.get('lazy_refcounts') ?? 'off'}`);
    parts.push(`refcount_bits=${parsed.refcountBits ?? 16}`);
  } else {
    if (given.has('preallocation')) parts.push(`preallocation=${given.get('preallocation')}`);
    parts.push(`size=${sizeBytes}`);
  }
  return `Formatting '${path}', ${parts.join(' ')}\n`;
}

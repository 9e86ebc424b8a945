/** The `strata img` command group: offline image tools modelled on qemu-img and qemu-io. */
import type { Subcommand } from '../command.js';
import { benchCommand } from './bench.js';
import { checkCommand } from './check.js';
import { commitCommand } from './commit.js';
import { compareCommand } from './compare.js';
import { convertCommand } from './convert.js';
import { createCommand } from './create.js';
import { infoCommand } from './info.js';
import { ioCommand } from './io.js';
import { mapCommand } from './map.js';
import { rebaseCommand } from './rebase.js';
import { resizeCommand } from './resize.js';
import { snapshotCommand } from './snapshot.js';

export const IMG_SUBCOMMANDS: readonly Subcommand[] = [
  createCommand,
  infoCommand,
  checkCommand,
  mapCommand,
  convertCommand,
  compareCommand,
  snapshotCommand,
  resizeCommand,
  rebaseCommand,
  commitCommand,
  benchCommand,
  ioCommand,
];

export function imgHelp(): string {
  const width = Math.max(...IMG_SUBCOMMANDS.map((c) => c.name.length));
  const lines = [
    'Usage: strata img <subcommand> [options] ...',
    '',
    'Offline image tools, modelled on qemu-img and qemu-io (same flags, same output).',
    '',
    'Subcommands:',
    ...IMG_SUBCOMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    "Run 'strata img <subcommand> --help' for a subcommand's options.",
  ];
  return `${lines.join('\n')}\n`;
}

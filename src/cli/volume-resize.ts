/** strata volume resize: grow (also while attached: docs/vhost-user.md "Online grow") or shrink a volume. */
import type { VolumeJson } from '../api/rest/schemas.js';
import { UsageError } from './errors.js';
import { clientOf, parse, parseSize, parseVolumeRef, positionals, printJson, size, subcommand, usageHint, volumePath, wantsJson, VOLUME_SIZE_LIMIT } from './remote/common.js';

export const resize = subcommand(
  'resize',
  'grow or shrink a volume',
  `Usage: strata volume resize [POOL/]VOLUME [+|-]SIZE [--shrink]

Sets the volume's size to SIZE, or changes it by +SIZE / -SIZE. Shrinking loses the data past
the new end, needs --shrink and is refused while the volume is attached. Growing works while
attached: a vhost-user guest sees the new size at once (QEMU's vhost-user-blk, tested with 7.2;
with other front-ends when its VM next reads the device config), NBD clients on their next
connection.

Options:
  --shrink   allow making the volume smaller
`,
  async (argv, con) => {
    const command = 'volume resize';
    const args = parse(argv, command, [{ long: 'shrink' }]);
    const [name, sizeText] = positionals(args, command, ['VOLUME', 'SIZE']) as [string, string];
    const ref = parseVolumeRef(name, command);
    const sign = sizeText[0] === '+' || sizeText[0] === '-' ? sizeText[0] : undefined;
    const amount = parseSize(sign ? sizeText.slice(1) : sizeText, 'size', command, VOLUME_SIZE_LIMIT);
    const client = clientOf(args);
    const what = `cannot resize volume '${ref.pool}/${ref.volume}'`;
    let target = amount;
    if (sign !== undefined) {
      const current = (await client.json<VolumeJson>('GET', volumePath(ref), what)).provisionedBytes;
      target = sign === '+' ? current + amount : current - amount;
      if (target <= 0) throw new UsageError(`${command}: the volume has ${size(current)}; shrinking by ${size(amount)} leaves nothing`, usageHint(command));
    }
    if (target === 0) throw new UsageError(`${command}: the size must be more than 0`, usageHint(command));
    const vol = await client.json<VolumeJson>('PATCH', volumePath(ref), what, { sizeBytes: target, allowShrink: args.has('shrink') });
    if (wantsJson(args)) printJson(con, vol);
    else con.stdout(`Volume '${ref.pool}/${ref.volume}' resized to ${size(vol.provisionedBytes)}.\n`);
    return 0;
  },
);

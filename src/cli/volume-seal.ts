/** strata volume seal / compact: freezing a dedup pool volume's active layer now, and merging its internal sealed layers. */
import type { VolumeCompactJson, VolumeSealJson } from '../api/rest/compact-schemas.js';
import type { Subcommand } from './command.js';
import { clientOf, parse, parseVolumeRef, positionals, printJson, subcommand, volumePath, wantsJson } from './remote/common.js';

const seal = subcommand(
  'seal',
  "freeze a volume's active layer now and seal it (dedup pools)",
  `Usage: strata volume seal [POOL/]VOLUME

Freezes the volume's active layer now, as the pool's seal policy (--seal-after, --seal-above)
would: exports of the volume pause for as long as a snapshot takes, the active layer becomes an
internal layer (not a snapshot: it has no name and lists nowhere), an empty layer goes on top,
and the guest goes on writing there. The frozen layer is then sealed in the background (a seal
job: see 'strata job list'), and once sealed merged with an internal layer under it (a compact
job), so the chain stays short.

Only dedup pools seal (strata pool create --dedup).
`,
  async (argv, con) => {
    const command = 'volume seal';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeRef(name, command);
    const label = `${ref.pool}/${ref.volume}`;
    const r = await clientOf(args).json<VolumeSealJson>('POST', `${volumePath(ref)}/seal`, `cannot seal volume '${label}'`);
    if (wantsJson(args)) printJson(con, r);
    else {
      const job = r.sealJobId === null ? '' : ` (seal job ${r.sealJobId})`;
      con.stdout(`Volume '${label}': froze its active layer as ${r.frozenLayerId}${job}; its chain is ${r.chainDepth} layers deep.\n`);
    }
    return 0;
  },
);

const compact = subcommand(
  'compact',
  "merge a volume's internal sealed layers (dedup pools)",
  `Usage: strata volume compact [POOL/]VOLUME

Merges adjacent internal sealed layers of the volume's chain (frozen by the seal policy or
'strata volume seal', never snapshots) into one, by reference: the new layer's data clusters
name the chunks the old layers already have, so no data is copied; only new qcow2 metadata is
written. Runs as a compact job and answers when it has ended. The daemon also compacts after
each seal of an internal layer; this runs it now (e.g. after seals that were still running).
Layers of different sizes (a resize between them) are left as they are.
`,
  async (argv, con) => {
    const command = 'volume compact';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeRef(name, command);
    const label = `${ref.pool}/${ref.volume}`;
    const r = await clientOf(args).json<VolumeCompactJson>('POST', `${volumePath(ref)}/compact`, `cannot compact volume '${label}'`);
    if (wantsJson(args)) printJson(con, r);
    else {
      con.stdout(
        `Volume '${label}': merged ${r.mergedPairs} pair${r.mergedPairs === 1 ? '' : 's'} of sealed layers; ` +
          `chain ${r.chainDepthBefore} -> ${r.chainDepthAfter} layers deep (job ${r.jobId}).\n`,
      );
    }
    return 0;
  },
);

export const SEAL_SUBCOMMANDS: readonly Subcommand[] = [seal, compact];

/** strata volume evict: a volume's sealed data moved to its dedup pool's tier now. */
import type { VolumeEvictJson } from '../api/rest/schemas.js';
import type { Subcommand } from './command.js';
import { countOf } from '../core/text.js';
import { clientOf, parse, parseVolumeRef, positionals, printJson, PROGRESS_OPTIONS, size, subcommand, volumePath, wantsJson } from './remote/common.js';
import { JobFollower, whileFollowing } from './remote/job-follower.js';
import { PROCESS_HOST, ProgressBar } from './remote/progress-bar.js';

const evict = subcommand(
  'evict',
  "move a volume's sealed data to its pool's tier now",
  `Usage: strata volume evict [POOL/]VOLUME [-p|--no-progress]

Moves the packs that hold the chunks of the volume's sealed layers (its snapshots, an import's
base) to the tier of its dedup pool now, without waiting for the cooling period (a job: see
'strata job list'). Each pack is copied, read back and compared before its local copy is deleted. A pack moves whole, so
packs that also hold other volumes' chunks move too: the output says how many. Reads of moved
data go to the tier (a pack read at random twice comes back as a cached local copy). The
volume's active layer (writes since its last snapshot) stays local.

Only a dedup pool created with --tier has a tier (strata pool create --dedup --tier ...).

Options:
  -p, --progress   show the progress bar (packs moved) even when stderr is not a terminal
  --no-progress    never show it
`,
  async (argv, con) => {
    const command = 'volume evict';
    const args = parse(argv, command, PROGRESS_OPTIONS);
    const [name] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeRef(name, command);
    const label = `${ref.pool}/${ref.volume}`;
    const client = clientOf(args);
    // The evict job's progress counts packs (each copied to the tier, read back and compared).
    const bar = new ProgressBar(con, ProgressBar.enabled(args), 'evicting', undefined, PROCESS_HOST, (n) => countOf(n, 'pack'));
    const r = await whileFollowing(client, bar, ProgressBar.enabled(args), new JobFollower('evict', label), () =>
      client.json<VolumeEvictJson>('POST', `${volumePath(ref)}/evict`, `cannot evict volume '${label}'`),
    );
    bar.update(r.packCount, r.packCount);
    bar.finish();
    if (wantsJson(args)) printJson(con, r);
    else {
      con.stdout(
        `Volume '${label}': moved ${r.movedPacks} of ${r.packCount} packs (${size(r.movedBytes)}, ${r.movedBytes} bytes) to the tier ` +
          `from ${r.layerCount} sealed layers; ${r.alreadyColdPacks} were there already (job ${r.jobId}).\n`,
      );
      if (r.sharedPackCount > 0) con.stdout(`${r.sharedPackCount} of the packs also hold chunks of other volumes: their reads of those go to the tier too.\n`);
      for (const f of r.failed) con.stdout(`stayed local: ${f.pack}: ${f.error}\n`);
    }
    return r.failed.length === 0 ? 0 : 1;
  },
);

export const EVICT_SUBCOMMANDS: readonly Subcommand[] = [evict];

/** strata serve: runs the storage daemon in the foreground until SIGTERM or SIGINT. */
import { parseArgs } from './args.js';
import { CliError, UsageError } from './errors.js';
import type { Console } from './output.js';
import { EXIT } from './remote/exits.js';

export const SERVE_HELP = `Usage: strata serve [--config FILE] [--data-dir DIR] [--listen HOST:PORT]
                    [--log-format text|json] [--log-level LEVEL]
                    [--nbd-listen HOST:PORT|off] [--nbd-socket PATH|off] [--nbd-poll-us N] [--vhost-poll-us N]
                    [--vhost-on-no-space wait|error]
                    [--nbd-tls-cert PEM --nbd-tls-key PEM [--nbd-tls require|offer]]
                    [--metrics-auth token|none] [--trash-check-interval-ms N]
                    [--tier-cooling-interval-ms N] [--seal-policy-interval-ms N]
                    [--s3-listen HOST:PORT|off] [--s3-domain DOMAINS]

Runs the storage daemon in the foreground: the catalog, the pools, the REST API (which the
other strata commands use) and the exports (NBD, vhost-user-blk). Stops cleanly on SIGTERM or SIGINT (exit status 0).

At the first start it creates the data folder, the pool 'default' and an API token in
<data>/token (mode 0600). Only one daemon can use a data folder (<data>/strata.pid is locked).

Options (each overrides the environment, which overrides the config file):
  --config FILE          JSON config file (default <data>/strata.json when it exists); keys:
                         dataDir, listen, logFormat, logLevel, maxChainDepth, chainDepthPolicy,
                         shutdownGraceMs, nbdListen, nbdSocket, nbdPollUs, vhostPollUs, vhostOnNoSpace, nbdTlsCert,
                         nbdTlsKey, nbdTls, metricsAuth, trashCheckIntervalMs, tierCoolingIntervalMs, sealPolicyIntervalMs, s3Listen, s3Domain
  --data-dir DIR         data folder (env STRATA_DATA_DIR; default ./strata-data)
  --listen HOST:PORT     REST API address (env STRATA_LISTEN; default 127.0.0.1:7460; port 0
                         picks a free port, logged at start)
  --log-format text|json log lines for people or JSON lines (env STRATA_LOG_FORMAT; default text)
  --log-level LEVEL      fatal, error, warn, info, debug, trace or silent (env STRATA_LOG_LEVEL;
                         default info)
  --nbd-listen HOST:PORT NBD over TCP (env STRATA_NBD_LISTEN; default 127.0.0.1:10809; 'off')
  --nbd-socket PATH      NBD over a unix socket (env STRATA_NBD_SOCKET; default <data>/nbd.sock;
                         'off')
  --nbd-poll-us N        after its last reply, an NBD connection keeps checking for its next
                         request this long before the daemon sleeps (env STRATA_NBD_POLL_US;
                         default 100, max 1000; 0 off). Cuts queue-depth-1 latency; spends up to
                         N us of CPU per idle period while the client keeps it busy, none when not
  --vhost-poll-us N      after serving a burst, a vhost-user ring keeps checking for the guest's
                         next request this long before asking the guest to kick (env
                         STRATA_VHOST_POLL_US; default 64, max 1000; 0 off). Spares the guest a
                         VM exit per request; not while polls keep missing or CPUs are short
  --vhost-on-no-space wait|error
                         what a vhost-user guest's write does when the pool is full (env
                         STRATA_VHOST_ON_NO_SPACE; default 'wait'): 'wait' holds it, retried
                         every second, until space is freed (the guest sees a stalled disk, not
                         an error; the log says what to free); 'error' answers IOERR at once.
                         'strata volume attach --on-no-space' overrides it per volume. NBD
                         clients always get ENOSPC (QEMU's werror=enospc then pauses the VM)
  --nbd-tls-cert PEM     TLS for NBD over TCP (NBD_OPT_STARTTLS): the server certificate (chain)
  --nbd-tls-key PEM      and its private key (env STRATA_NBD_TLS_CERT, STRATA_NBD_TLS_KEY)
  --nbd-tls MODE         'require' (default: clients must start TLS first) or 'offer' (env
                         STRATA_NBD_TLS). The unix socket stays plaintext (local, mode 0600 dir)
  --metrics-auth MODE    whether GET /metrics needs the API token: 'token' or 'none' (env
                         STRATA_METRICS_AUTH). Default: 'none' when --listen is a loopback
                         address (127.0.0.0/8, ::1, localhost), else 'token': the metrics name
                         pools and volumes. /v1 always needs the token; /openapi.json never does
  --trash-check-interval-ms N
                         how often the daemon purges the volumes whose time in the trash is up
                         (env STRATA_TRASH_CHECK_INTERVAL_MS; default 60000, at least 10); at
                         start it purges what expired while it was down
  --tier-cooling-interval-ms N
                         how often packs of tiered dedup pools not read for the pool's cooling
                         period move to the tier (env STRATA_TIER_COOLING_INTERVAL_MS; default
                         600000); each pass moves at most 64 packs per pool
  --seal-policy-interval-ms N
                         how often the seal policy of dedup pools (--seal-after, --seal-above)
                         is applied (env STRATA_SEAL_POLICY_INTERVAL_MS; default 30000)
  --s3-listen HOST:PORT  the S3-compatible endpoint (env STRATA_S3_LISTEN; default 127.0.0.1:7480;
                         'off'). Requests are signed with access keys: strata user key create
  --s3-domain DOMAINS    comma-separated domains for virtual-host style addressing
                         (bucket.DOMAIN/key; env STRATA_S3_DOMAIN); path style always works

Exit status: 0 after a clean shutdown, 1 when it cannot start, 2 usage error, 4 when another
daemon holds the data folder.
`;

export async function runServe(argv: string[], con: Console): Promise<number> {
  const command = 'serve';
  const args = parseArgs(
    argv,
    [
      { long: 'config', value: true },
      { long: 'data-dir', value: true },
      { long: 'listen', value: true },
      { long: 'log-format', value: true },
      { long: 'log-level', value: true },
      { long: 'nbd-listen', value: true },
      { long: 'nbd-socket', value: true },
      { long: 'nbd-poll-us', value: true },
      { long: 'vhost-poll-us', value: true },
      { long: 'vhost-on-no-space', value: true },
      { long: 'nbd-tls-cert', value: true },
      { long: 'nbd-tls-key', value: true },
      { long: 'nbd-tls', value: true },
      { long: 'metrics-auth', value: true },
      { long: 'trash-check-interval-ms', value: true },
      { long: 'tier-cooling-interval-ms', value: true },
      { long: 'seal-policy-interval-ms', value: true },
      { long: 's3-listen', value: true },
      { long: 's3-domain', value: true },
    ],
    command,
  );
  if (args.positionals.length > 0) throw new UsageError(`${command}: unexpected argument '${args.positionals[0]}'`, "see 'strata serve --help'");
  const { loadConfig } = await import('../daemon/config.js');
  const { startDaemon, describeStartError } = await import('../daemon/daemon.js');
  const { tuneDaemonHeapGrowth } = await import('../daemon/heap-growth.js');
  tuneDaemonHeapGrowth(); // this process is the daemon: fewer full GCs (heap-growth.ts)
  let config;
  try {
    config = loadConfig({
      config: args.value('config'),
      dataDir: args.value('data-dir'),
      listen: args.value('listen'),
      logFormat: args.value('log-format'),
      logLevel: args.value('log-level'),
      nbdListen: args.value('nbd-listen'),
      nbdSocket: args.value('nbd-socket'),
      nbdPollUs: args.value('nbd-poll-us'),
      vhostPollUs: args.value('vhost-poll-us'),
      vhostOnNoSpace: args.value('vhost-on-no-space'),
      nbdTlsCert: args.value('nbd-tls-cert'),
      nbdTlsKey: args.value('nbd-tls-key'),
      nbdTls: args.value('nbd-tls'),
      metricsAuth: args.value('metrics-auth'),
      trashCheckIntervalMs: args.value('trash-check-interval-ms'),
      tierCoolingIntervalMs: args.value('tier-cooling-interval-ms'),
      sealPolicyIntervalMs: args.value('seal-policy-interval-ms'),
      s3Listen: args.value('s3-listen'),
      s3Domain: args.value('s3-domain'),
    });
  } catch (err) {
    throw new CliError(`serve: ${(err as Error).message}`, { hint: "see 'strata serve --help'", exitCode: EXIT.USAGE });
  }
  // The handlers go in before the daemon starts: it listens (and a supervisor or test may send
  // SIGTERM) before startDaemon returns, and Node's default action would kill it uncleanly. A
  // signal during start-up is kept and acted on once the daemon is up.
  let signals = 0;
  let onStarted: ((signal: NodeJS.Signals) => void) | undefined;
  let early: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      con.stderr(`strata: ${signal} again: exiting without finishing the shutdown\n`);
      process.exit(1);
    }
    if (onStarted) onStarted(signal);
    else {
      early = signal;
      con.stderr(`strata: ${signal} during start-up: stopping once started (again to exit now)\n`);
    }
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  let daemon;
  try {
    daemon = await startDaemon(config);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    throw new CliError(`cannot start the daemon: ${describeStartError(err, config)}`, {
      hint: "see 'strata serve --help'",
      exitCode: typeof code === 'string' && code === 'BUSY' ? EXIT.CONFLICT : EXIT.ERROR,
    });
  }
  const running = daemon;
  const code = await new Promise<number>((resolve) => {
    onStarted = (signal) => {
      running.shutdown(signal).then(
        () => resolve(0),
        (err: unknown) => {
          running.logger.error({ err }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    if (early) onStarted(early);
  });
  // Handles a library may keep open must not hold the process after a clean shutdown.
  process.exit(code);
}

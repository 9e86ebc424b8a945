/**
 * The daemon's configuration: defaults, then a JSON file, then environment variables, then
 * command-line flags (each later source overrides the earlier ones).
 *
 *   defaults      dataDir ./strata-data, listen 127.0.0.1:7460, logFormat text, logLevel info
 *   file          --config FILE, else <dataDir>/strata.json when it exists
 *   env           STRATA_DATA_DIR, STRATA_LISTEN, STRATA_LOG_FORMAT, STRATA_LOG_LEVEL,
 *                 STRATA_NBD_LISTEN, STRATA_NBD_SOCKET, STRATA_NBD_POLL_US, STRATA_VHOST_POLL_US, STRATA_NBD_TLS_CERT,
 *                 STRATA_VHOST_ON_NO_SPACE,
 *                 STRATA_NBD_TLS_KEY, STRATA_NBD_TLS, STRATA_METRICS_AUTH, STRATA_TRASH_CHECK_INTERVAL_MS,
 *                 STRATA_S3_LISTEN, STRATA_S3_DOMAIN
 *   flags         --data-dir, --listen, --log-format, --log-level, --nbd-listen, --nbd-socket,
 *                 --nbd-poll-us, --vhost-poll-us, --vhost-on-no-space, --nbd-tls-cert, --nbd-tls-key, --nbd-tls, --metrics-auth,
 *                 --trash-check-interval-ms, --s3-listen, --s3-domain
 *   (nbdListen defaults to 127.0.0.1:10809, nbdSocket to <dataDir>/nbd.sock; 'off' turns either off;
 *   nbdPollUs, how long an idle NBD connection is busy-polled, defaults to 100, 0 turns it off;
 *   vhostPollUs, how long a drained vhost-user ring is polled before the guest must kick, defaults
 *   to 64, 0 turns it off; vhostOnNoSpace, what a vhost-user guest's write into a full pool does,
 *   'wait' (default: held until space is freed) or 'error' (IOERR at once);
 *   metricsAuth defaults to 'none' when the API listens on loopback only, else 'token';
 *   trashCheckIntervalMs, how often expired volumes are purged from the trash, defaults to 60000;
 *   s3Listen, the S3 endpoint, defaults to 127.0.0.1:7480, 'off' turns it off; s3Domain is a
 *   comma-separated list of domains for virtual-host style addressing, none by default)
 *
 * The file's dataDir is used only when neither a flag nor the environment names one (it cannot
 * point at itself otherwise). Relative paths in the file are relative to the file's folder.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { StorageError } from '../core/errors.js';

export const DEFAULT_DATA_DIR = './strata-data';
export const DEFAULT_LISTEN = '127.0.0.1:7460';
/** NBD's registered port, on the loopback interface unless configured otherwise. */
export const DEFAULT_NBD_LISTEN = '127.0.0.1:10809';
export const NBD_SOCKET_NAME = 'nbd.sock';
/** Busy-poll window of an idle NBD connection (see src/export/nbd/idle-poll.ts). */
export const DEFAULT_NBD_POLL_US = 100;
/** Longer windows would hold the event loop too long from everyone else. */
export const MAX_NBD_POLL_US = 1000;
/**
 * Poll window of a drained vhost-user ring (see src/export/vhost-user/rings.ts). Through the test
 * rig's guest at 4 KiB QD 32, the next kick came 64-128 us (writes) and 128-256 us (reads) after
 * the ring went idle, the kick's own cost included: 64 us polls made the guest kick 0.2-0.3 times
 * per write and 0.5 per read, 32 us (QEMU's IOThread maximum) 0.3-0.4 and 0.6-0.8, and only the
 * longer window lifted the reads (bench/RESULTS.md).
 */
export const DEFAULT_VHOST_POLL_US = 64;
export const DEFAULT_POOL = 'default';
/** The S3 endpoint's address (radosgw's customary port), on the loopback interface by default. */
export const DEFAULT_S3_LISTEN = '127.0.0.1:7480';
export const CONFIG_FILE_NAME = 'strata.json';

export type LogFormat = 'text' | 'json';
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type ChainDepthPolicy = 'refuse' | 'flatten';
/** What a vhost-user guest's write into a full pool does (src/export/vhost-user/space-wait.ts). */
export type VhostOnNoSpace = 'wait' | 'error';
/** Whether GET /metrics needs the API token ('token') or is open ('none'); /v1 always needs it. */
export type MetricsAuth = 'token' | 'none';
export const METRICS_AUTH_MODES: readonly MetricsAuth[] = ['token', 'none'];

export interface ListenAddress {
  host: string;
  port: number;
}

export interface DaemonConfig {
  /** Absolute path of the data folder. */
  dataDir: string;
  listen: ListenAddress;
  logFormat: LogFormat;
  logLevel: LogLevel;
  /** Where the configuration file was read from (undefined: none). */
  configFile: string | undefined;
  /** Volume-layer settings, handed to the volume service as they are. */
  maxChainDepth: number | undefined;
  chainDepthPolicy: ChainDepthPolicy | undefined;
  /** How long a clean shutdown waits for running jobs before cancelling them (default 10 s). */
  shutdownGraceMs: number;
  /** NBD over TCP (undefined: off). */
  nbdListen: ListenAddress | undefined;
  /** NBD's unix socket (undefined: off); default <dataDir>/nbd.sock. */
  nbdSocketPath: string | undefined;
  /** How long an idle NBD connection is busy-polled for its next request, in microseconds (0: never). */
  nbdPollUs: number;
  /** How long a drained vhost-user ring is polled for the guest's next request, in microseconds (0: never). */
  vhostPollUs: number;
  /**
   * What a vhost-user guest's write the pool has no room for does, unless its attach says:
   * 'wait' (default) holds it until space is freed, 'error' answers IOERR at once.
   */
  vhostOnNoSpace: VhostOnNoSpace;
  /** TLS on the NBD TCP listener (undefined: none): PEM files, and whether plaintext is refused. */
  nbdTls: NbdTlsConfig | undefined;
  /** /metrics: open when the API listens on loopback only (default), token-protected otherwise. */
  metricsAuth: MetricsAuth;
  /** How often the daemon purges the volumes whose time in the trash is up (default 1 minute). */
  trashCheckIntervalMs: number;
  /** How often the daemon moves the cooled packs of tiered dedup pools to their tier (default 10 minutes). */
  tierCoolingIntervalMs: number;
  /** How often the daemon applies the dedup pools' seal policy (default 30 seconds). */
  sealPolicyIntervalMs: number;
  /** The S3 endpoint (undefined: off). */
  s3Listen: ListenAddress | undefined;
  /** Domains for virtual-host style S3 addressing (bucket.<domain>); path style always works. */
  s3Domains: string[];
}

export interface NbdTlsConfig {
  certPath: string;
  keyPath: string;
  /** 'require': clients must STARTTLS before anything else (default); 'offer': they may. */
  mode: 'require' | 'offer';
}

/** What the command line gave (undefined: not given). */
export interface ConfigFlags {
  config?: string | undefined;
  dataDir?: string | undefined;
  listen?: string | undefined;
  logFormat?: string | undefined;
  logLevel?: string | undefined;
  nbdListen?: string | undefined;
  nbdSocket?: string | undefined;
  nbdPollUs?: string | undefined;
  vhostPollUs?: string | undefined;
  vhostOnNoSpace?: string | undefined;
  nbdTlsCert?: string | undefined;
  nbdTlsKey?: string | undefined;
  nbdTls?: string | undefined;
  metricsAuth?: string | undefined;
  trashCheckIntervalMs?: string | undefined;
  tierCoolingIntervalMs?: string | undefined;
  sealPolicyIntervalMs?: string | undefined;
  s3Listen?: string | undefined;
  s3Domain?: string | undefined;
}

interface FileConfig {
  dataDir?: string;
  listen?: string;
  logFormat?: string;
  logLevel?: string;
  maxChainDepth?: number;
  chainDepthPolicy?: string;
  shutdownGraceMs?: number;
  nbdListen?: string;
  nbdSocket?: string;
  nbdPollUs?: number;
  vhostPollUs?: number;
  vhostOnNoSpace?: string;
  nbdTlsCert?: string;
  nbdTlsKey?: string;
  nbdTls?: string;
  metricsAuth?: string;
  trashCheckIntervalMs?: number;
  tierCoolingIntervalMs?: number;
  sealPolicyIntervalMs?: number;
  s3Listen?: string;
  s3Domain?: string;
}

const FILE_KEYS = new Set(['dataDir', 'listen', 'logFormat', 'logLevel', 'maxChainDepth', 'chainDepthPolicy', 'shutdownGraceMs', 'nbdListen', 'nbdSocket', 'nbdPollUs', 'vhostPollUs', 'vhostOnNoSpace', 'nbdTlsCert', 'nbdTlsKey', 'nbdTls', 'metricsAuth', 'trashCheckIntervalMs', 'tierCoolingIntervalMs', 'sealPolicyIntervalMs', 's3Listen', 's3Domain']);

function invalid(message: string): StorageError {
  return new StorageError('INVALID_ARGUMENT', message);
}

/** "host:port", "[v6]:port" or ":port"/"port" (host 127.0.0.1). Port 0 picks a free port. */
export function parseListen(text: string, source: string): ListenAddress {
  const trimmed = text.trim();
  let host = '127.0.0.1';
  let portText: string;
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(trimmed);
  if (v6) {
    host = v6[1] as string;
    portText = v6[2] as string;
  } else if (/^\d+$/.test(trimmed)) {
    portText = trimmed;
  } else {
    const colon = trimmed.lastIndexOf(':');
    if (colon < 0) throw invalid(`${source}: '${text}' is not host:port (e.g. 127.0.0.1:7460)`);
    if (colon > 0) host = trimmed.slice(0, colon);
    portText = trimmed.slice(colon + 1);
  }
  const port = /^\d+$/.test(portText) ? Number(portText) : NaN;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalid(`${source}: '${text}' has no valid port (0..65535)`);
  }
  if (host.length === 0) throw invalid(`${source}: '${text}' has an empty host`);
  return { host, port };
}

export function formatListen(addr: ListenAddress): string {
  return addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}

function parseLogFormat(text: string, source: string): LogFormat {
  if (text === 'text' || text === 'json') return text;
  throw invalid(`${source}: log format must be 'text' or 'json', not '${text}'`);
}

function parseLogLevel(text: string, source: string): LogLevel {
  const level = LOG_LEVELS.find((l) => l === text);
  if (level === undefined) throw invalid(`${source}: log level must be one of ${LOG_LEVELS.join(', ')}, not '${text}'`);
  return level;
}

export const DEFAULT_TRASH_CHECK_INTERVAL_MS = 60_000;
/** Below this the expiry timer would mostly spin on an empty trash. */
const MIN_TRASH_CHECK_INTERVAL_MS = 10;

export const DEFAULT_TIER_COOLING_INTERVAL_MS = 600_000;
export const DEFAULT_SEAL_POLICY_INTERVAL_MS = 30_000;

function parseTrashCheckIntervalMs(text: string, source: string, what = 'the trash check interval'): number {
  const value = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isSafeInteger(value) || value < MIN_TRASH_CHECK_INTERVAL_MS) {
    throw invalid(`${source}: ${what} must be a whole number of milliseconds, at least ${MIN_TRASH_CHECK_INTERVAL_MS}, not '${text}'`);
  }
  return value;
}

function parsePollUs(text: string, source: string, what = 'the NBD poll window'): number {
  const value = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (!Number.isSafeInteger(value) || value > MAX_NBD_POLL_US) {
    throw invalid(`${source}: ${what} must be 0..${MAX_NBD_POLL_US} microseconds, not '${text}'`);
  }
  return value;
}

/** True for addresses only this host can reach: 127.0.0.0/8, ::1 (also IPv4-mapped) and localhost. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.toLowerCase().replace(/^::ffff:/, '');
  if (bare === 'localhost' || bare === '::1') return true;
  return isIP(bare) === 4 && bare.startsWith('127.');
}

function parseOnNoSpace(text: string, source: string): VhostOnNoSpace {
  if (text === 'wait' || text === 'error') return text;
  throw invalid(`${source}: what a vhost-user write into a full pool does must be 'wait' or 'error', not '${text}'`);
}

function parseMetricsAuth(text: string, source: string): MetricsAuth {
  const mode = METRICS_AUTH_MODES.find((m) => m === text);
  if (mode === undefined) throw invalid(`${source}: metrics auth must be 'token' or 'none', not '${text}'`);
  return mode;
}

/** A comma-separated list of DNS domains (virtual-host style S3 addressing). */
function parseS3Domains(text: string, source: string): string[] {
  const domains = text.split(',').map((d) => d.trim().toLowerCase().replace(/^\./, '')).filter((d) => d !== '');
  for (const domain of domains) {
    if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(domain)) {
      throw invalid(`${source}: '${domain}' is not a DNS domain (e.g. s3.example.com; buckets are then addressed as bucket.s3.example.com)`);
    }
  }
  return domains;
}

function readConfigFile(file: string): FileConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new StorageError('NOT_FOUND', `cannot read the config file ${file}: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw invalid(`config file ${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw invalid(`config file ${file} must hold a JSON object`);
  }
  const obj = parsed as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    if (!FILE_KEYS.has(key)) throw invalid(`config file ${file}: unknown key '${key}' (known: ${[...FILE_KEYS].join(', ')})`);
  }
  for (const key of ['dataDir', 'listen', 'logFormat', 'logLevel', 'chainDepthPolicy', 'vhostOnNoSpace', 'nbdListen', 'nbdSocket', 'nbdTlsCert', 'nbdTlsKey', 'nbdTls', 'metricsAuth', 's3Listen', 's3Domain']) {
    if (obj[key] !== undefined && typeof obj[key] !== 'string') throw invalid(`config file ${file}: '${key}' must be a string`);
  }
  for (const key of ['maxChainDepth', 'shutdownGraceMs', 'nbdPollUs', 'vhostPollUs', 'trashCheckIntervalMs', 'tierCoolingIntervalMs', 'sealPolicyIntervalMs']) {
    const v = obj[key];
    if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)) {
      throw invalid(`config file ${file}: '${key}' must be a non-negative integer`);
    }
  }
  return obj as FileConfig;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

/** The settings given by a flag, a variable or a file key alike (dataDir and config are resolved apart). */
type SourcedKey = Exclude<keyof ConfigFlags, 'config' | 'dataDir'> & keyof FileConfig;
/** A setting's text, where it came from ('--listen', 'STRATA_LISTEN', the file and key) and the folder its paths are relative to. */
type Sourced = [value: string, source: string, baseDir: string];

/** The command-line flag of a setting: nbdPollUs is --nbd-poll-us. */
function flagName(key: SourcedKey): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** Resolves the configuration from flags, the environment and the config file. */
export function loadConfig(flags: ConfigFlags, env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): DaemonConfig {
  const flagDataDir = nonEmpty(flags.dataDir);
  const envDataDir = nonEmpty(env['STRATA_DATA_DIR']);
  // Which file: --config, else <dataDir>/strata.json when present (dataDir from flag, env or default).
  let configFile: string | undefined;
  if (flags.config !== undefined) {
    configFile = path.resolve(cwd, flags.config);
  } else {
    const candidate = path.resolve(cwd, flagDataDir ?? envDataDir ?? DEFAULT_DATA_DIR, CONFIG_FILE_NAME);
    try {
      readFileSync(candidate);
      configFile = candidate;
    } catch {
      configFile = undefined;
    }
  }
  const file: FileConfig = configFile === undefined ? {} : readConfigFile(configFile);
  const fileDir = configFile === undefined ? cwd : path.dirname(configFile);

  const dataDir =
    flagDataDir !== undefined
      ? path.resolve(cwd, flagDataDir)
      : envDataDir !== undefined
        ? path.resolve(cwd, envDataDir)
        : file.dataDir !== undefined
          ? path.resolve(fileDir, file.dataDir)
          : path.resolve(cwd, DEFAULT_DATA_DIR);

  // A setting's value and where it came from, named as the operator wrote it (the flag, the
  // variable, the file's key), so a refusal points at the place to correct. Paths from a flag or
  // the environment are relative to the working folder, from the file to its folder (like dataDir).
  const pick = (key: SourcedKey, envName: string): Sourced | undefined => {
    const flag = nonEmpty(flags[key]);
    if (flag !== undefined) return [flag, flagName(key), cwd];
    const e = nonEmpty(env[envName]);
    if (e !== undefined) return [e, envName, cwd];
    const fileValue = file[key];
    if (fileValue !== undefined) return [String(fileValue), `config file ${configFile}, key '${key}'`, fileDir];
    return undefined;
  };
  const listenSrc = pick('listen', 'STRATA_LISTEN');
  const formatSrc = pick('logFormat', 'STRATA_LOG_FORMAT');
  const levelSrc = pick('logLevel', 'STRATA_LOG_LEVEL');
  const nbdListenSrc = pick('nbdListen', 'STRATA_NBD_LISTEN') ?? [DEFAULT_NBD_LISTEN, 'default', cwd];
  const resolveFrom = ([value, , baseDir]: Sourced): string => path.resolve(baseDir, value);
  const nbdSocketSrc = pick('nbdSocket', 'STRATA_NBD_SOCKET');
  let nbdSocketPath: string | undefined = path.join(dataDir, NBD_SOCKET_NAME);
  if (nbdSocketSrc !== undefined) nbdSocketPath = nbdSocketSrc[0] === 'off' ? undefined : resolveFrom(nbdSocketSrc);

  const tlsCertSrc = pick('nbdTlsCert', 'STRATA_NBD_TLS_CERT');
  const tlsKeySrc = pick('nbdTlsKey', 'STRATA_NBD_TLS_KEY');
  const tlsModeSrc = pick('nbdTls', 'STRATA_NBD_TLS');
  let nbdTls: NbdTlsConfig | undefined;
  if ((tlsCertSrc === undefined) !== (tlsKeySrc === undefined)) {
    throw invalid(`NBD TLS needs both a certificate and its key (--nbd-tls-cert and --nbd-tls-key)`);
  }
  if (tlsModeSrc !== undefined && tlsModeSrc[0] !== 'require' && tlsModeSrc[0] !== 'offer') {
    throw invalid(`${tlsModeSrc[1]}: NBD TLS mode must be 'require' or 'offer', not '${tlsModeSrc[0]}'`);
  }
  if (tlsCertSrc !== undefined && tlsKeySrc !== undefined) {
    nbdTls = { certPath: resolveFrom(tlsCertSrc), keyPath: resolveFrom(tlsKeySrc), mode: tlsModeSrc?.[0] === 'offer' ? 'offer' : 'require' };
  } else if (tlsModeSrc !== undefined) {
    throw invalid(`${tlsModeSrc[1]}: NBD TLS mode given without --nbd-tls-cert and --nbd-tls-key`);
  }
  const pollSrc = pick('nbdPollUs', 'STRATA_NBD_POLL_US');
  const vhostPollSrc = pick('vhostPollUs', 'STRATA_VHOST_POLL_US');
  const noSpaceSrc = pick('vhostOnNoSpace', 'STRATA_VHOST_ON_NO_SPACE');

  let chainDepthPolicy: ChainDepthPolicy | undefined;
  if (file.chainDepthPolicy !== undefined) {
    if (file.chainDepthPolicy !== 'refuse' && file.chainDepthPolicy !== 'flatten') {
      throw invalid(`config file ${configFile}: chainDepthPolicy must be 'refuse' or 'flatten'`);
    }
    chainDepthPolicy = file.chainDepthPolicy;
  }

  const listen = listenSrc ? parseListen(listenSrc[0], listenSrc[1]) : parseListen(DEFAULT_LISTEN, 'default');
  const metricsAuthSrc = pick('metricsAuth', 'STRATA_METRICS_AUTH');
  const trashSrc = pick('trashCheckIntervalMs', 'STRATA_TRASH_CHECK_INTERVAL_MS');
  const coolingSrc = pick('tierCoolingIntervalMs', 'STRATA_TIER_COOLING_INTERVAL_MS');
  const sealPolicySrc = pick('sealPolicyIntervalMs', 'STRATA_SEAL_POLICY_INTERVAL_MS');
  const s3ListenSrc = pick('s3Listen', 'STRATA_S3_LISTEN') ?? [DEFAULT_S3_LISTEN, 'default', cwd];
  const s3DomainSrc = pick('s3Domain', 'STRATA_S3_DOMAIN');

  return {
    dataDir,
    listen,
    logFormat: formatSrc ? parseLogFormat(formatSrc[0], formatSrc[1]) : 'text',
    logLevel: levelSrc ? parseLogLevel(levelSrc[0], levelSrc[1]) : 'info',
    configFile,
    maxChainDepth: file.maxChainDepth,
    chainDepthPolicy,
    shutdownGraceMs: file.shutdownGraceMs ?? 10_000,
    nbdListen: nbdListenSrc[0] === 'off' ? undefined : parseListen(nbdListenSrc[0], nbdListenSrc[1]),
    nbdSocketPath,
    nbdPollUs: pollSrc ? parsePollUs(pollSrc[0], pollSrc[1]) : DEFAULT_NBD_POLL_US,
    vhostPollUs: vhostPollSrc ? parsePollUs(vhostPollSrc[0], vhostPollSrc[1], 'the vhost-user poll window') : DEFAULT_VHOST_POLL_US,
    vhostOnNoSpace: noSpaceSrc ? parseOnNoSpace(noSpaceSrc[0], noSpaceSrc[1]) : 'wait',
    nbdTls,
    // Scrapers on this host need no token; beyond it, volume names and sizes are not for everyone.
    metricsAuth: metricsAuthSrc ? parseMetricsAuth(metricsAuthSrc[0], metricsAuthSrc[1]) : isLoopbackHost(listen.host) ? 'none' : 'token',
    trashCheckIntervalMs: trashSrc ? parseTrashCheckIntervalMs(trashSrc[0], trashSrc[1]) : DEFAULT_TRASH_CHECK_INTERVAL_MS,
    tierCoolingIntervalMs: coolingSrc ? parseTrashCheckIntervalMs(coolingSrc[0], coolingSrc[1], 'the tier cooling interval') : DEFAULT_TIER_COOLING_INTERVAL_MS,
    sealPolicyIntervalMs: sealPolicySrc ? parseTrashCheckIntervalMs(sealPolicySrc[0], sealPolicySrc[1], 'the seal policy interval') : DEFAULT_SEAL_POLICY_INTERVAL_MS,
    s3Listen: s3ListenSrc[0] === 'off' ? undefined : parseListen(s3ListenSrc[0], s3ListenSrc[1]),
    s3Domains: s3DomainSrc ? parseS3Domains(s3DomainSrc[0], s3DomainSrc[1]) : [],
  };
}

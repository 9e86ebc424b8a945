/**
 * The admin CLI's HTTP client for the daemon's REST API: where the daemon is (--url, STRATA_URL,
 * default http://127.0.0.1:7460), the token (--token, STRATA_TOKEN, else <data-dir>/token with
 * --data-dir, STRATA_DATA_DIR, default ./strata-data), JSON requests, and streamed uploads and
 * downloads with back-pressure. API errors become CliErrors with the exit statuses of exits.ts.
 */
import http from 'node:http';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { StorageError, StorageErrorCodes, type StorageErrorCode } from '../../core/errors.js';
import { CliError, UNREACHABLE_CODE } from '../errors.js';
import { EXIT } from './exits.js';
import { cliHint, parseFix } from './fixes.js';

export const DEFAULT_URL = 'http://127.0.0.1:7460';
const HTTP_AGENT = new http.Agent({ keepAlive: true });
const HTTPS_AGENT = new https.Agent({ keepAlive: true });
export const DEFAULT_DATA_DIR = './strata-data';

export interface ClientSettings {
  url?: string | undefined;
  token?: string | undefined;
  dataDir?: string | undefined;
}

/**
 * Hints for API errors, worded for the daemon's objects (not image files), when the daemon sent no
 * fix of its own: it names the list of the kind of thing not found (a pool's volumes, the jobs, ...)
 * and what holds a busy volume (its exports, a job), so these only say what holds for any of them.
 * BUSY has none: every BUSY message says what holds the thing and what to do, and no sentence
 * true of all of them would add to it.
 */
const HINTS: Partial<Record<string, string>> = {
  INVALID_ARGUMENT: "check the arguments; '--help' lists them",
  NOT_FOUND: "check the name; the 'list' subcommand of the same command shows what exists",
  ALREADY_EXISTS: 'choose another name or delete the existing one',
  READ_ONLY: 'it cannot be changed in its current state',
  NO_SPACE: 'free space on the host or raise the pool quota',
  LIMIT_EXCEEDED: 'a limit was reached (quota, snapshot limit, chain depth): raise it, delete snapshots, or flatten',
  UNSUPPORTED: 'this daemon does not support that',
  CORRUPT: "a layer's metadata is damaged; see the daemon's log",
  // Also a pool's S3 tier refusing for good (a missing bucket, refused keys): its message names the fix.
  IO_ERROR: "the host storage or a pool's tier failed: the message says how to fix it, the daemon's log says more",
  UNAVAILABLE: 'a service the data depends on did not answer: check the S3 server the message names, then run the command again',
  CANCELLED: 'the operation was cancelled; run it again',
  INTERNAL: "the daemon failed unexpectedly; see its log",
};

export function exitCodeFor(code: string): number {
  switch (code) {
    case 'NOT_FOUND':
      return EXIT.NOT_FOUND;
    case 'ALREADY_EXISTS':
    case 'BUSY':
    case 'READ_ONLY':
    case 'CANCELLED':
      return EXIT.CONFLICT;
    case 'UNAVAILABLE':
      return EXIT.UNAVAILABLE;
    default:
      return EXIT.ERROR;
  }
}

function isStorageCode(code: string): code is StorageErrorCode {
  return (StorageErrorCodes as readonly string[]).includes(code);
}

/** An error reported by the daemon, as a CliError carrying the code (hint: the fix in the CLI's words). */
export function apiError(code: string, message: string, hint?: string): CliError {
  const cause = isStorageCode(code) ? new StorageError(code, message) : undefined;
  const origin = cause !== undefined ? { cause } : code !== '' ? { code } : {};
  return new CliError(message, { hint: hint ?? HINTS[code], exitCode: exitCodeFor(code), hintDecided: true, ...origin });
}

export interface ApiResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: http.IncomingMessage;
}

export class ApiClient {
  readonly baseUrl: URL;
  private readonly token: string | undefined;
  private readonly tokenProblem: string | undefined;

  constructor(settings: ClientSettings, env: NodeJS.ProcessEnv = process.env) {
    const urlText = settings.url ?? (env['STRATA_URL'] || undefined) ?? DEFAULT_URL;
    let url: URL;
    try {
      url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(urlText) ? urlText : `http://${urlText}`);
    } catch {
      throw new CliError(`'${urlText}' is not a URL`, { hint: 'use --url http://HOST:PORT or STRATA_URL', exitCode: EXIT.USAGE });
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new CliError(`'${urlText}' is not an http or https URL`, { hint: 'use --url http://HOST:PORT', exitCode: EXIT.USAGE });
    }
    this.baseUrl = url;
    const explicit = settings.token ?? (env['STRATA_TOKEN'] || undefined);
    if (explicit !== undefined) {
      this.token = explicit.trim();
    } else {
      const dataDir = settings.dataDir ?? (env['STRATA_DATA_DIR'] || undefined) ?? DEFAULT_DATA_DIR;
      const file = path.resolve(dataDir, 'token');
      try {
        this.token = readFileSync(file, 'utf8').trim();
      } catch (err) {
        this.token = undefined;
        const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `cannot be read (${(err as Error).message})`;
        this.tokenProblem = `no token given (--token, STRATA_TOKEN) and ${file} ${reason}`;
      }
    }
  }

  /** The base URL without a trailing slash, for messages. */
  get where(): string {
    return this.baseUrl.href.replace(/\/$/, '');
  }

  private unreachable(err: NodeJS.ErrnoException): CliError {
    const reason = err.code === 'ECONNREFUSED' ? 'connection refused' : err.code === 'ENOTFOUND' ? 'unknown host' : err.message;
    return new CliError(`daemon not reachable at ${this.where}: ${reason}`, {
      hint: "start it with 'strata serve', or point --url / STRATA_URL at it",
      exitCode: EXIT.ERROR,
      code: UNREACHABLE_CODE,
    });
  }

  /**
   * Sends a request. A body may be a Buffer or a stream (piped with back-pressure); the promise
   * resolves with the response as soon as its head arrives, even while the upload still runs
   * (the daemon answers early when it refuses an upload).
   */
  request(method: string, pathAndQuery: string, options: { body?: Buffer | Readable; contentType?: string } = {}): Promise<ApiResponse> {
    const url = new URL(pathAndQuery, this.baseUrl);
    const headers: http.OutgoingHttpHeaders = { accept: 'application/json' };
    if (this.token !== undefined) headers['authorization'] = `Bearer ${this.token}`;
    const body = options.body;
    if (body !== undefined) {
      headers['content-type'] = options.contentType ?? 'application/json';
      if (Buffer.isBuffer(body)) headers['content-length'] = String(body.length);
    }
    const lib = url.protocol === 'https:' ? https : http;
    return new Promise<ApiResponse>((resolve, reject) => {
      let settled = false;
      // Keep-alive (idle sockets do not hold the process): with "Connection: close" the daemon
      // would close the socket right after refusing an upload, and the client could see EPIPE
      // before it reads the refusal; with keep-alive the daemon reads and drops the rest instead.
      const req = lib.request(url, { method, headers, agent: url.protocol === 'https:' ? HTTPS_AGENT : HTTP_AGENT }, (res) => {
        settled = true;
        if (body !== undefined && !Buffer.isBuffer(body) && !body.readableEnded) {
          // The daemon answered before the upload ended (a refusal): stop sending, and drop the
          // connection once the answer has been read.
          body.unpipe(req);
          body.destroy();
          res.on('end', () => req.destroy());
          res.on('close', () => req.destroy());
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res });
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (settled) return;
        settled = true;
        if (['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN', 'ETIMEDOUT'].includes(err.code ?? '')) {
          reject(this.unreachable(err));
        } else {
          reject(
            new CliError(`the connection to the daemon at ${this.where} failed: ${err.message}`, {
              hint: "the daemon may have stopped; check 'strata status' and its log",
              exitCode: EXIT.ERROR,
            }),
          );
        }
      });
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else {
        body.on('error', (err) => {
          if (settled) return;
          settled = true;
          req.destroy();
          reject(new CliError(`reading the input failed: ${err.message}`, { cause: err, exitCode: EXIT.ERROR }));
        });
        body.pipe(req);
      }
    });
  }

  /** Reads a whole response body as text. */
  static async text(res: ApiResponse): Promise<string> {
    const chunks: Buffer[] = [];
    for await (const chunk of res.body) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }

  /** Turns an error response into a CliError (reads its body). */
  async failure(res: ApiResponse, what: string): Promise<CliError> {
    let text = '';
    try {
      text = await ApiClient.text(res);
    } catch {
      // the body could not be read: report the status alone
    }
    let code = '';
    let message = `${what}: HTTP ${res.status}`;
    let hint: string | undefined;
    try {
      const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; fix?: unknown } };
      if (parsed.error && typeof parsed.error.code === 'string' && typeof parsed.error.message === 'string') {
        code = parsed.error.code;
        message = `${what}: ${parsed.error.message}`;
        // The daemon's remedy in this CLI's words (its "hint" names REST fields: not for us).
        const fix = parseFix(parsed.error.fix);
        if (fix !== undefined) hint = cliHint(fix);
      }
    } catch {
      if (text.trim() !== '') message += ` (${text.trim().slice(0, 200)})`;
    }
    if (res.status === 401) {
      const detail = this.tokenProblem ?? 'the token was not accepted';
      return new CliError(`${what}: the daemon at ${this.where} refused the request: ${detail}`, {
        hint: "pass --token, set STRATA_TOKEN, or point --data-dir / STRATA_DATA_DIR at the daemon's data folder (its token file)",
        exitCode: EXIT.ERROR,
        code: 'UNAUTHORIZED',
      });
    }
    if (code === '') code = res.status === 404 ? 'NOT_FOUND' : res.status === 409 ? 'BUSY' : res.status >= 500 ? 'INTERNAL' : '';
    return apiError(code, message, hint);
  }

  /** A JSON request; resolves with the parsed body (undefined for 204). */
  async json<T>(method: string, pathAndQuery: string, what: string, body?: unknown): Promise<T> {
    const res = await this.request(method, pathAndQuery, body === undefined ? {} : { body: Buffer.from(JSON.stringify(body)) });
    if (res.status >= 400) throw await this.failure(res, what);
    const text = await ApiClient.text(res);
    if (res.status === 204 || text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new CliError(`${what}: the daemon sent a response that is not JSON`, { exitCode: EXIT.ERROR });
    }
  }
}

/** Encodes a path segment. */
export function seg(text: string): string {
  return encodeURIComponent(text);
}

/** A query string from the defined entries ("" when none). */
export function query(params: Record<string, string | number | boolean | undefined>): string {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined) as Array<[string, string | number | boolean]>;
  if (entries.length === 0) return '';
  return `?${entries.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`).join('&')}`;
}

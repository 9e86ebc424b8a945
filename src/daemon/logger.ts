/**
 * The daemon's logger: pino (what fastify logs through), writing either pino's JSON lines or, for
 * people, one readable line per entry:
 *
 *   2025-01-31T10:00:00.123Z INFO  request method=GET url=/v1/pools status=200 ms=1.4
 *
 * The text form is a small synchronous formatter over pino's JSON output (no worker thread, no
 * pino-pretty): the time, the level, the message, then the other fields as key=value.
 */
import { pino, type Logger } from 'pino';
import type { LogFormat, LogLevel } from './config.js';

const LEVEL_NAMES: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};

const OMITTED = new Set(['time', 'level', 'msg', 'pid', 'hostname', 'v']);

function formatValue(value: unknown): string {
  if (typeof value === 'string') return /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null) return String(value);
  return JSON.stringify(value);
}

/** Turns one pino JSON line into the text line (exported for tests). */
export function formatLogLine(jsonLine: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(jsonLine) as Record<string, unknown>;
  } catch {
    return jsonLine.endsWith('\n') ? jsonLine : `${jsonLine}\n`;
  }
  const time = typeof entry['time'] === 'number' ? new Date(entry['time']).toISOString() : new Date().toISOString();
  const level = LEVEL_NAMES[entry['level'] as number] ?? String(entry['level']);
  const parts = [time, level.padEnd(5), typeof entry['msg'] === 'string' ? entry['msg'] : ''];
  let stack: string | undefined;
  for (const [key, value] of Object.entries(entry)) {
    if (OMITTED.has(key) || value === undefined) continue;
    if (key === 'err' && value !== null && typeof value === 'object') {
      const err = value as { message?: unknown; code?: unknown; stack?: unknown };
      parts.push(`error=${formatValue(err.message)}`);
      if (err.code !== undefined) parts.push(`code=${formatValue(err.code)}`);
      if (typeof err.stack === 'string') stack = err.stack;
      continue;
    }
    parts.push(`${key}=${formatValue(value)}`);
  }
  let line = parts.filter((p) => p !== '').join(' ');
  if (stack !== undefined) line += `\n${stack.replace(/^/gm, '    ')}`;
  return `${line}\n`;
}

export interface LoggerOptions {
  format: LogFormat;
  level: LogLevel;
  /** Where lines go (default: stdout). */
  write?: (text: string) => void;
}

export function createLogger(options: LoggerOptions): Logger {
  const write = options.write ?? ((text: string) => void process.stdout.write(text));
  const stream = {
    write(line: string): void {
      write(options.format === 'json' ? line : formatLogLine(line));
    },
  };
  return pino({ level: options.level, base: { pid: process.pid } }, stream);
}

/**
 * How the export servers (NBD, vhost-user-blk) report what happens on their connections: a line
 * and a level, so that the daemon can tell an operator's problem (a protocol violation, a failing
 * device, a second VM on one disk: warn) from the ordinary life of a connection (info) and from
 * a client hanging up mid-conversation, which is not a problem at all (debug).
 */
export type ExportLogLevel = 'debug' | 'info' | 'warn';

/** Receives one line per event; callers that want no levels may ignore the second argument. */
export type ExportLog = (line: string, level: ExportLogLevel) => void;

/**
 * errno names that mean the peer went away (closed or reset its end) while we still had
 * something to say: what a client that disconnects after an error, or is killed, leaves behind.
 */
const PEER_HANG_UP_CODES: ReadonlySet<string> = new Set(['EPIPE', 'ECONNRESET', 'ECONNABORTED', 'ENOTCONN', 'ESHUTDOWN']);

/** Whether err (a Node socket error or a SysError) only says that the peer hung up. */
export function isPeerHangUp(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && PEER_HANG_UP_CODES.has(code);
}

/**
 * How a vhost-user message handler refuses a request, shared by the control channel (backend.ts)
 * and the modules it hands messages to (memory-table.ts, rings.ts, inflight.ts). The control
 * channel decides what a refusal costs (backend.ts `refuse`): an error reply, a log line, or the
 * connection.
 */

/** A request we refuse: answered with a failure if a reply is expected, else the connection closes. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
}

/** A request we decline without distrusting the front-end (e.g. SET_CONFIG): never closes the connection. */
export class DeclinedError extends Error {
  override readonly name = 'DeclinedError';
}

/**
 * Takes ownership of fds[i]: the slot is set to -1 so that the dispatcher, which closes every
 * descriptor of a message its handler did not take, leaves it alone.
 */
export function takeFd(fds: number[], i: number): number {
  const fd = fds[i];
  if (fd === undefined || fd < 0) throw new ProtocolError('missing file descriptor');
  fds[i] = -1;
  return fd;
}

export function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

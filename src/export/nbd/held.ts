/**
 * Connections accepted while the NBD server is not yet open (NbdServerOptions.holdUntilOpen): no
 * greeting, so the client waits in its handshake; those that go away meanwhile are forgotten;
 * release() hands the rest to the server once its exports are in place.
 */
import type net from 'node:net';
import { isPeerHangUp, type ExportLog } from '../log.js';

interface Held<T> {
  socket: net.Socket;
  context: T;
  onClose: () => void;
  onError: (err: Error) => void;
}

export class HeldConnections<T> {
  private readonly held = new Set<Held<T>>();

  constructor(private readonly log: ExportLog) {}

  get size(): number {
    return this.held.size;
  }

  /** Holds socket (with what the server needs to serve it later, e.g. its listener's TLS). */
  add(socket: net.Socket, context: T): void {
    const entry: Held<T> = {
      socket,
      context,
      onClose: () => this.held.delete(entry),
      onError: (err) => this.log(`nbd connection error while waiting for the exports: ${err.message}`, isPeerHangUp(err) ? 'debug' : 'warn'),
    };
    socket.once('close', entry.onClose);
    socket.on('error', entry.onError);
    this.held.add(entry);
  }

  /** Hands every connection still open to serve, in the order they arrived; holds nothing after. */
  release(serve: (socket: net.Socket, context: T) => void): void {
    const entries = [...this.held];
    this.held.clear();
    for (const { socket, context, onClose, onError } of entries) {
      socket.off('close', onClose);
      socket.off('error', onError);
      if (!socket.destroyed) serve(socket, context);
    }
  }

  destroyAll(): void {
    for (const { socket } of this.held) socket.destroy();
    this.held.clear();
  }
}

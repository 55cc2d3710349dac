/**
 * Coalesces the writes one callback makes on a stream socket into one system call (writev), sent as
 * soon as the callback returns (process.nextTick): a replay hands the guest hundreds of frames in
 * one callback, a burst of guest replies makes as many digests. Used on sockets with Nagle off, so
 * nothing waits beyond the end of the callback.
 */
import type { Socket } from 'node:net';

export function corkForThisTick(socket: Socket): void {
  if (socket.writableCorked) return;
  socket.cork();
  process.nextTick(() => socket.uncork());
}

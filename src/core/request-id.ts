/**
 * The request id of a service datagram, as the guest reads it (guests/dx-legacy/PROTOCOL.md §3.1).
 * Here, at the bottom, because layers on both sides of the guest need it: the quarantine of poison
 * inputs in the store, the client map and the input bounds in the guest layer, reply keys in
 * replication. Pure: bytes in, an id out.
 */

/**
 * After at most one trailing `\n` or `\r\n` is stripped, the bytes before the first space, 1-16
 * bytes of 0x21-0x7E. Undefined when the guest would stay silent (and cache nothing).
 */
export function requestId(payload: Buffer): string | undefined {
  let len = payload.length;
  if (len >= 2 && payload[len - 2] === 0x0d && payload[len - 1] === 0x0a) len -= 2;
  else if (len >= 1 && payload[len - 1] === 0x0a) len -= 1;
  let n = 0;
  while (n < len && payload[n] !== 0x20) {
    const c = payload[n]!;
    if (c < 0x21 || c > 0x7e || n === 16) return undefined;
    n++;
  }
  return n === 0 ? undefined : payload.subarray(0, n).toString('latin1');
}

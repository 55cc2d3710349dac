/**
 * The input stream between primary and backup: binary messages on a MessageChannel.
 *   INPUT   every external input with its sequence number and the client's identity
 *   ACK     cumulative: the backup holds every input up to seq (output commit waits for this)
 *   DIGEST  hash of the primary guest's reply to one request, for the divergence watch
 *   CONTROL JSON: clone hand-over, re-clone requests, switchover
 * Pure encoding; no I/O.
 */
import { createHash } from 'node:crypto';
import { isIP } from 'node:net';
import { z } from 'zod';
import { CLIENT_PORT_FIRST, CLIENT_PORT_LAST, requestId } from '../guest/client-map.js';
import type { GuestInput } from '../guest/io.js';

export const T_INPUT = 1;
export const T_ACK = 2;
export const T_DIGEST = 3;
export const T_CONTROL = 4;
/** Every message type the replication channel carries; any other is a protocol violation. */
export const REPLICATION_TYPES: ReadonlySet<number> = new Set([T_INPUT, T_ACK, T_DIGEST, T_CONTROL]);

/** Largest input payload: a UDP datagram (65 507 bytes over IPv4). */
export const MAX_INPUT_PAYLOAD = 65507;
/** Longest client address text (an IPv6 address with an embedded IPv4 one). */
const MAX_ADDRESS = 45;
/** The request id part of a reply key (replyKey): at most 16 bytes. */
export const MAX_REQUEST_ID = 16;

export interface SequencedInput {
  seq: number;
  input: GuestInput;
  /** The external client behind input.clientPort (requests only). */
  client?: { address: string; port: number };
}

function putSeq(b: Buffer, off: number, seq: number): void {
  b.writeUInt32BE(Math.floor(seq / 2 ** 32), off);
  b.writeUInt32BE(seq >>> 0, off + 4);
}

function getSeq(b: Buffer, off: number): number {
  return b.readUInt32BE(off) * 2 ** 32 + b.readUInt32BE(off + 4);
}

export function encodeInput(s: SequencedInput): Buffer {
  const addr = Buffer.from(s.client?.address ?? '', 'latin1');
  const payload = s.input.payload;
  const b = Buffer.allocUnsafe(8 + 1 + 2 + 1 + addr.length + 2 + payload.length);
  putSeq(b, 0, s.seq);
  b[8] = s.input.kind === 'request' ? 0 : 1;
  b.writeUInt16BE(s.input.kind === 'request' ? s.input.clientPort : 0, 9);
  b[11] = addr.length;
  addr.copy(b, 12);
  b.writeUInt16BE(s.client?.port ?? 0, 12 + addr.length);
  payload.copy(b, 14 + addr.length);
  return b;
}

/**
 * Exact decoder of an INPUT: every byte accounted for, every field in range. A message that does
 * not re-encode to the same bytes is refused with a RangeError naming the field.
 *   seq 1..2^53-1; kind 0 (request) or 1 (AUTH answer); a request's clientPort in the client map's
 *   range with the client's address (an IP address) and port (1..65535), or neither (no client
 *   known); an AUTH answer has no port nor client; payload at most one UDP datagram.
 */
export function decodeInput(b: Buffer): SequencedInput {
  if (b.length < 14) throw new RangeError(`INPUT: ${b.length} bytes, shorter than its 14-byte header`);
  const seq = getSeq(b, 0);
  if (seq < 1 || seq > Number.MAX_SAFE_INTEGER) throw new RangeError(`INPUT seq ${seq} out of range (1..2^53-1)`);
  const kind = b[8];
  const clientPort = b.readUInt16BE(9);
  const alen = b[11]!;
  if (b.length < 14 + alen) throw new RangeError(`INPUT: address length ${alen} runs past the message (${b.length} bytes)`);
  if (alen > MAX_ADDRESS) throw new RangeError(`INPUT address length ${alen} out of range (0..${MAX_ADDRESS})`);
  const address = b.subarray(12, 12 + alen).toString('latin1');
  const port = b.readUInt16BE(12 + alen);
  const payload = Buffer.from(b.subarray(14 + alen));
  if (payload.length > MAX_INPUT_PAYLOAD) throw new RangeError(`INPUT payload of ${payload.length} bytes exceeds ${MAX_INPUT_PAYLOAD}`);
  if (kind === 0) {
    if (clientPort < CLIENT_PORT_FIRST || clientPort > CLIENT_PORT_LAST) throw new RangeError(`INPUT clientPort ${clientPort} out of range (${CLIENT_PORT_FIRST}..${CLIENT_PORT_LAST})`);
    if (alen === 0 && port === 0) return { seq, input: { kind: 'request', clientPort, payload } };
    if (alen === 0 || isIP(address) === 0) throw new RangeError('INPUT client address is not an IP address');
    if (port === 0) throw new RangeError('INPUT client port 0 out of range (1..65535)');
    return { seq, input: { kind: 'request', clientPort, payload }, client: { address, port } };
  }
  if (kind === 1) {
    if (clientPort !== 0 || alen !== 0 || port !== 0) throw new RangeError('INPUT: an AUTH answer carries no clientPort nor client');
    return { seq, input: { kind: 'auth-reply', payload } };
  }
  throw new RangeError(`INPUT kind ${kind} unknown (0 request, 1 AUTH answer)`);
}

export function encodeAck(seq: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  putSeq(b, 0, seq);
  return b;
}

/** An ACK is exactly 8 bytes, a sequence number 0..2^53-1 (whether it was sent is the replicator's check). */
export function decodeAck(b: Buffer): number {
  if (b.length !== 8) throw new RangeError(`ACK: ${b.length} bytes, expected 8`);
  const seq = getSeq(b, 0);
  if (seq > Number.MAX_SAFE_INTEGER) throw new RangeError(`ACK seq ${seq} out of range (0..2^53-1)`);
  return seq;
}

/**
 * The key of a request and its reply: the client's identity and the request id as the guest reads
 * it (requestId: 1-16 printable bytes). A request without a valid id (empty, over 16 bytes, control
 * bytes: the guest stays silent) gets a key no reply can have (two spaces), never a real id's: a 17-byte id
 * must not collide with its 16-byte prefix and release that request's reply before its ACK.
 */
export function replyKey(clientPort: number, payload: Buffer): string {
  const id = requestId(payload);
  return id === undefined ? `${clientPort}  (no id)` : `${clientPort} ${id}`;
}

export function replyDigest(payload: Buffer): Buffer {
  return createHash('sha256').update(payload).digest().subarray(0, 8);
}

export function encodeDigest(key: string, digest: Buffer): Buffer {
  const k = Buffer.from(key, 'latin1');
  return Buffer.concat([Buffer.from([k.length]), k, digest]);
}

/** What replyKey can produce: a port (0..65535, no leading zero), a space, an id of at most 16 bytes without a space. */
/** `<port> <id>`, or `<port>  (no id)`: replyKey's key of a payload without a valid id. */
const REPLY_KEY = new RegExp(`^(0|[1-9][0-9]{0,4})(?: [^ ]{0,${MAX_REQUEST_ID}}|  \\(no id\\))$`, 's');

/** A DIGEST: [key length][key][8-byte digest], exactly; the key as replyKey makes it. */
export function decodeDigest(b: Buffer): { key: string; digest: Buffer } {
  if (b.length < 1) throw new RangeError('DIGEST: empty message');
  const n = b[0]!;
  if (b.length !== 1 + n + 8) throw new RangeError(`DIGEST: ${b.length} bytes, its key length ${n} says ${1 + n + 8}`);
  const key = b.subarray(1, 1 + n).toString('latin1');
  const m = REPLY_KEY.exec(key);
  if (!m || Number(m[1]) > 65535) throw new RangeError(`DIGEST key ${JSON.stringify(key.slice(0, 40))} is not "<port> <id>" (id at most ${MAX_REQUEST_ID} bytes)`);
  return { key, digest: Buffer.from(b.subarray(1 + n)) };
}

const seqNo = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const text = z.string().max(4096);
const ipAddress = z.string().max(MAX_ADDRESS).refine((a) => isIP(a) !== 0, 'an IP address');
const udpPort = z.number().int().min(1).max(65535);
const clientPort = z.number().int().min(CLIENT_PORT_FIRST).max(CLIENT_PORT_LAST);

/**
 * The control messages, validated field by field: a message from a partner running another version
 * (a rolling upgrade) or a damaged one is refused by decodeControl, never half-read.
 */
const CONTROL = z.discriminatedUnion('type', [
  // servedUnprotected: the source served (replied) through this input without its backup's ACK; a
  // target whose log stops short of it holds none of the source's state until the clone is cut over.
  z.object({ type: z.literal('clone-prepare'), memoryMb: z.number().int().positive().max(1 << 20), guestFile: text.optional(), servedUnprotected: seqNo.optional() }),
  z.object({ type: z.literal('guest-upgrade-prepare'), guestFile: text, version: text }),
  z.object({ type: z.literal('guest-upgrade-progress'), step: text, detail: text.optional() }),
  z.object({ type: z.literal('guest-upgrade-ready'), version: text, replayed: seqNo }),
  z.object({ type: z.literal('guest-upgrade-failed'), reason: text }),
  z.object({ type: z.literal('clone-ready') }),
  z.object({ type: z.literal('clone-failed'), reason: text }),
  z.object({
    type: z.literal('clone-done'), cutSeq: seqNo, guestSeq: seqNo,
    clients: z.object({
      entries: z.array(z.tuple([clientPort, ipAddress, udpPort])).max(CLIENT_PORT_LAST - CLIENT_PORT_FIRST + 1),
      next: clientPort,
      cache: z.array(z.string().max(32)).max(1 << 20).optional(), fresh: z.array(clientPort).max(CLIENT_PORT_LAST - CLIENT_PORT_FIRST + 1).optional(),
    }),
    downtimeMs: z.number().nonnegative().finite().nullable(), authOpen: z.array(z.string().max(256)).max(CLIENT_PORT_LAST - CLIENT_PORT_FIRST + 1).optional(),
    // The subscriber whose answer the guest was handed and may not have read at the cut (its REG's
    // outcome not seen yet): a question about it from the clone is the guest's retransmission.
    authAnswered: z.string().max(256).optional(),
    // That answer's bytes (base64), if the source still had them: a clone that asks for it again
    // never got it and is handed it again (Replicator.rehandAnswer).
    authAnswer: z.string().max(4096).regex(/^[A-Za-z0-9+/]*={0,2}$/).optional(),
  }),
  z.object({ type: z.literal('reclone'), reason: text }),
  // The backup's witness: its copy answered `replies` requests of the stream and the primary's guest
  // has sent no reply for silentMs (src/replication/guest-witness.ts).
  // fastOnly: reported within the witness's quiet window (after a cut-over or a checkpoint): the
  // primary judges it by its fast check only (src/pair/guest-hang.ts).
  z.object({ type: z.literal('guest-hung'), silentMs: z.number().nonnegative().finite(), replies: seqNo, fastOnly: z.boolean().optional() }),
  z.object({ type: z.literal('switchover'), keepCopy: z.boolean().optional() }),
  z.object({ type: z.literal('guest-upgrade-commit') }),
  z.object({ type: z.literal('hello'), board: text, role: text, lastSeq: seqNo, cloned: z.boolean() }),
  // The pair's quarantine of poison inputs (src/store/quarantine.ts), from the primary: the backup
  // merges it, so the board that takes over answers their retries the same way.
  z.object({
    type: z.literal('quarantine'),
    entries: z.array(z.object({
      id: z.number().int().positive().max(Number.MAX_SAFE_INTEGER), key: z.string().regex(/^[0-9a-f]{32}$/), seq: seqNo, clientAddress: ipAddress.nullable(), clientPort: udpPort.nullable(),
      payloadBase64: z.string().max(4096).regex(/^[A-Za-z0-9+/]*={0,2}$/), at: text, confirmation: text,
      failures: z.array(z.object({ copy: text, board: text, how: z.enum(['crash', 'hang']), cause: text, at: text })).max(16),
      status: z.enum(['active', 'released']), releasedBy: text.nullable(), releasedAt: text.nullable(),
    })).max(1024),
  }),
]);

export type ControlMessage = z.infer<typeof CONTROL>;
export type ControlType = ControlMessage['type'];

export function encodeControl(m: ControlMessage): Buffer {
  return Buffer.from(JSON.stringify(m));
}

/** Parses and validates one control message; throws a RangeError naming what is wrong. */
export function decodeControl(b: Buffer): ControlMessage {
  let json: unknown;
  try {
    json = JSON.parse(b.toString('utf8'));
  } catch (e) {
    throw new RangeError(`control message is not JSON: ${(e as Error).message}`);
  }
  const r = CONTROL.safeParse(json);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new RangeError(`bad control message${i.path.length ? ` (${i.path.join('.')})` : ''}: ${i.message}`);
  }
  return r.data;
}

/**
 * The input stream between primary and backup: binary messages on a MessageChannel.
 *   INPUT   every external input with its sequence number and the client's identity
 *   ACK     cumulative: the backup holds every input up to seq (output commit waits for this)
 *   DIGEST  hash of the primary guest's reply to one request, for the divergence watch
 *   CONTROL JSON: clone hand-over, re-clone requests, switchover
 * Pure encoding; no I/O.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { requestId } from '../guest/client-map.js';
import type { GuestInput } from '../guest/io.js';

export const T_INPUT = 1;
export const T_ACK = 2;
export const T_DIGEST = 3;
export const T_CONTROL = 4;

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

export function decodeInput(b: Buffer): SequencedInput {
  if (b.length < 14) throw new RangeError('short INPUT');
  const seq = getSeq(b, 0);
  const kind = b[8];
  const clientPort = b.readUInt16BE(9);
  const alen = b[11]!;
  if (b.length < 14 + alen) throw new RangeError('short INPUT');
  const address = b.subarray(12, 12 + alen).toString('latin1');
  const port = b.readUInt16BE(12 + alen);
  const payload = Buffer.from(b.subarray(14 + alen));
  if (kind === 0) return { seq, input: { kind: 'request', clientPort, payload }, client: { address, port } };
  if (kind === 1) return { seq, input: { kind: 'auth-reply', payload } };
  throw new RangeError(`bad INPUT kind ${kind}`);
}

export function encodeAck(seq: number): Buffer {
  const b = Buffer.allocUnsafe(8);
  putSeq(b, 0, seq);
  return b;
}

export function decodeAck(b: Buffer): number {
  if (b.length !== 8) throw new RangeError('bad ACK');
  return getSeq(b, 0);
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

export function decodeDigest(b: Buffer): { key: string; digest: Buffer } {
  const n = b[0]!;
  if (b.length !== 1 + n + 8) throw new RangeError('bad DIGEST');
  return { key: b.subarray(1, 1 + n).toString('latin1'), digest: Buffer.from(b.subarray(1 + n)) };
}

const seqNo = z.number().int().nonnegative();
const text = z.string().max(4096);

/**
 * The control messages, validated field by field: a message from a partner running another version
 * (a rolling upgrade) or a damaged one is refused by decodeControl, never half-read.
 */
const CONTROL = z.discriminatedUnion('type', [
  z.object({ type: z.literal('clone-prepare'), memoryMb: z.number().int().positive(), guestFile: text.optional() }),
  z.object({ type: z.literal('guest-upgrade-prepare'), guestFile: text, version: text }),
  z.object({ type: z.literal('guest-upgrade-progress'), step: text, detail: text.optional() }),
  z.object({ type: z.literal('guest-upgrade-ready'), version: text, replayed: seqNo }),
  z.object({ type: z.literal('guest-upgrade-failed'), reason: text }),
  z.object({ type: z.literal('clone-ready') }),
  z.object({ type: z.literal('clone-failed'), reason: text }),
  z.object({
    type: z.literal('clone-done'), cutSeq: seqNo, guestSeq: seqNo,
    clients: z.object({
      entries: z.array(z.tuple([z.number().int(), z.string().max(256), z.number().int()])), next: z.number().int(),
      cache: z.array(z.string().max(32)).optional(), fresh: z.array(z.number().int()).optional(),
    }),
    downtimeMs: z.number().nullable(), authOpen: z.array(z.string().max(256)).optional(),
  }),
  z.object({ type: z.literal('reclone'), reason: text }),
  // The backup's witness: its copy answered `replies` requests of the stream and the primary's guest
  // has sent no reply for silentMs (src/replication/guest-witness.ts).
  z.object({ type: z.literal('guest-hung'), silentMs: z.number().nonnegative(), replies: seqNo }),
  z.object({ type: z.literal('switchover'), keepCopy: z.boolean().optional() }),
  z.object({ type: z.literal('guest-upgrade-commit') }),
  z.object({ type: z.literal('hello'), board: text, role: text, lastSeq: seqNo, cloned: z.boolean() }),
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

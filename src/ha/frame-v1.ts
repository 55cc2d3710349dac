/**
 * Heartbeat frames of version 1, the layout of the firmware before the one deployed today (which sends
 * version 2), kept for one purpose: a rolling upgrade, where one board still runs that firmware while
 * the other runs this one. Membership decodes them (and sends them while its partner is heard only in
 * version 1; see docs/ha.md, "Rolling upgrade from the previous firmware"). Version 1 has no echo (a frame is not bound to the receiver's
 * boot), no controller health and a 32-bit sequence number.
 *
 *   0  u8   version (1)           7  u8   name length L (1-32)
 *   1  u8   type (1 = heartbeat)  8  L    sender name (ASCII)
 *   2  u8   role                  8+L  u32 boot generation
 *   3  u8   guest state           12+L u32 sequence number (the low 32 bits of ours)
 *   4  u8   watchdog state        16+L 12  HMAC-SHA256(key, bytes 0..16+L)[0..12]
 *   5  u8   CPU load % (255 = ?)  28+L u32 CRC-32 of bytes 0..28+L
 *   6  u8   priority
 * Pure functions; no I/O.
 */
import { FRAME_VERSION_2, commonFields, decodeHeartbeat, openFrame, sealFrame, startFrame, type DecodeError, type FrameLayout, type Heartbeat, type HeartbeatVersion } from './frame.js';

export const FRAME_VERSION_1 = 1;
const LAYOUT_V1: FrameLayout = { version: FRAME_VERSION_1, fixedBytes: 32, nameLengthAt: 7 };

/** Encodes the fields version 1 has: no echo, no health, the sequence number's low 32 bits. */
export function encodeHeartbeatV1(h: Heartbeat, key: Buffer): Buffer {
  const { f, L } = startFrame(h, LAYOUT_V1);
  f.writeUInt32BE(h.generation >>> 0, 8 + L);
  f.writeUInt32BE(h.seq % 2 ** 32, 12 + L);
  return sealFrame(f, L, key, LAYOUT_V1);
}

/** Decodes a version-1 frame; `echo` is 0 (none) and `health` 'ok' (version 1 carries neither). */
export function decodeHeartbeatV1(f: Buffer, key: Buffer): Heartbeat | DecodeError {
  const L = openFrame(f, key, LAYOUT_V1);
  if (typeof L === 'string') return L;
  const common = commonFields(f, L, LAYOUT_V1);
  if (!common) return 'malformed';
  return { ...common, generation: f.readUInt32BE(8 + L), echo: 0, seq: f.readUInt32BE(12 + L), health: 'ok' };
}

/** A frame of any version, by its first byte (which every version's CRC and MAC cover). */
export function decodeAnyHeartbeat(f: Buffer, key: Buffer): { hb: Heartbeat; version: HeartbeatVersion } | DecodeError {
  const v1 = f[0] === FRAME_VERSION_1;
  const hb = v1 ? decodeHeartbeatV1(f, key) : decodeHeartbeat(f, key);
  return typeof hb === 'string' ? hb : { hb, version: v1 ? 1 : f[0] === FRAME_VERSION_2 ? 2 : 3 };
}

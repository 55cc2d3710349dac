/**
 * Heartbeat frames of version 1, the previous firmware's layout, kept for one purpose: a rolling
 * upgrade, where one board still runs the previous firmware while the other runs this one. Membership
 * decodes them (and sends them while its partner is heard only in version 1; see docs/ha.md, "Rolling
 * upgrade from version-1 heartbeats"). Version 1 has no echo (a frame is not bound to the receiver's
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
import { createHmac, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { GUEST_STATES, ROLES, TYPE_HEARTBEAT, WATCHDOG_STATES, decodeHeartbeat, type DecodeError, type Heartbeat } from './frame.js';

export const FRAME_VERSION_1 = 1;
const MAC_BYTES = 12;
const FIXED_BYTES = 32;

/** Encodes the fields version 1 has: no echo, no health, the sequence number's low 32 bits. */
export function encodeHeartbeatV1(h: Heartbeat, key: Buffer): Buffer {
  const name = Buffer.from(h.sender, 'latin1');
  if (name.length < 1 || name.length > 32) throw new RangeError('sender name must be 1-32 bytes');
  const L = name.length;
  const f = Buffer.alloc(FIXED_BYTES + L);
  f[0] = FRAME_VERSION_1;
  f[1] = TYPE_HEARTBEAT;
  f[2] = ROLES.indexOf(h.role);
  f[3] = GUEST_STATES.indexOf(h.guest);
  f[4] = WATCHDOG_STATES.indexOf(h.watchdog);
  f[5] = h.cpuLoad === null ? 255 : Math.max(0, Math.min(100, Math.round(h.cpuLoad)));
  f[6] = h.priority & 0xff;
  f[7] = L;
  name.copy(f, 8);
  f.writeUInt32BE(h.generation >>> 0, 8 + L);
  f.writeUInt32BE(h.seq % 2 ** 32, 12 + L);
  createHmac('sha256', key).update(f.subarray(0, 16 + L)).digest().copy(f, 16 + L, 0, MAC_BYTES);
  f.writeUInt32BE(crc32(f.subarray(0, 28 + L)), 28 + L);
  return f;
}

/** Decodes a version-1 frame; `echo` is 0 (none) and `health` 'ok' (version 1 carries neither). */
export function decodeHeartbeatV1(f: Buffer, key: Buffer): Heartbeat | DecodeError {
  if (f.length < FIXED_BYTES + 1) return 'malformed';
  const L = f[7]!;
  if (L < 1 || L > 32 || f.length !== FIXED_BYTES + L) return 'malformed';
  if (f.readUInt32BE(28 + L) !== crc32(f.subarray(0, 28 + L))) return 'crc';
  if (f[0] !== FRAME_VERSION_1 || f[1] !== TYPE_HEARTBEAT) return 'version';
  const mac = createHmac('sha256', key).update(f.subarray(0, 16 + L)).digest().subarray(0, MAC_BYTES);
  if (!timingSafeEqual(mac, f.subarray(16 + L, 28 + L))) return 'mac';
  const role = ROLES[f[2]!];
  const guest = GUEST_STATES[f[3]!];
  const watchdog = WATCHDOG_STATES[f[4]!];
  if (!role || !guest || !watchdog) return 'malformed';
  return {
    sender: f.subarray(8, 8 + L).toString('latin1'),
    generation: f.readUInt32BE(8 + L),
    echo: 0,
    seq: f.readUInt32BE(12 + L),
    role,
    guest,
    watchdog,
    cpuLoad: f[5] === 255 ? null : f[5]!,
    priority: f[6]!,
    health: 'ok',
  };
}

/** A frame of either version, by its first byte (a version-2 frame always starts with 2). */
export function decodeAnyHeartbeat(f: Buffer, key: Buffer): { hb: Heartbeat; version: 1 | 2 } | DecodeError {
  const v1 = f[0] === FRAME_VERSION_1;
  const hb = v1 ? decodeHeartbeatV1(f, key) : decodeHeartbeat(f, key);
  return typeof hb === 'string' ? hb : { hb, version: v1 ? 1 : 2 };
}

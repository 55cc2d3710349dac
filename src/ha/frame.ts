/**
 * Heartbeat frames: the same bytes on every partner link (UDP payload on Ethernet, SLIP-framed on
 * serial). Authenticated with HMAC-SHA256 (truncated to 96 bits, enough for a frame that is stale in
 * milliseconds) under the pair's shared key, then a CRC-32 so line noise is told apart from forgery.
 *
 *   0  u8   version (1)           7  u8   name length L (1-32)
 *   1  u8   type (1 = heartbeat)  8  L    sender name (ASCII)
 *   2  u8   role                  8+L  u32 boot generation
 *   3  u8   guest state           12+L u32 sequence number
 *   4  u8   watchdog state        16+L 12  HMAC-SHA256(key, bytes 0..16+L)[0..12]
 *   5  u8   CPU load % (255 = ?)  28+L u32 CRC-32 of bytes 0..28+L
 *   6  u8   priority
 * Pure functions; no I/O.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';

export const FRAME_VERSION = 1;
export const TYPE_HEARTBEAT = 1;
const MAC_BYTES = 12;

export const ROLES = ['STARTING', 'BACKUP', 'PRIMARY', 'FENCING', 'FAULT', 'STOPPING'] as const;
export type Role = (typeof ROLES)[number];
export const GUEST_STATES = ['none', 'stopped', 'starting', 'running', 'restarting', 'failed'] as const;
export type GuestHealth = (typeof GUEST_STATES)[number];
export const WATCHDOG_STATES = ['none', 'kicking', 'starving'] as const;
export type WatchdogHealth = (typeof WATCHDOG_STATES)[number];

export interface Heartbeat {
  sender: string;
  generation: number;
  seq: number;
  role: Role;
  guest: GuestHealth;
  watchdog: WatchdogHealth;
  /** CPU load in percent, or null when unknown. */
  cpuLoad: number | null;
  priority: number;
}

export type DecodeError = 'malformed' | 'crc' | 'version' | 'mac';

export function encodeHeartbeat(h: Heartbeat, key: Buffer): Buffer {
  const name = Buffer.from(h.sender, 'latin1');
  if (name.length < 1 || name.length > 32) throw new RangeError('sender name must be 1-32 bytes');
  const L = name.length;
  const f = Buffer.alloc(32 + L);
  f[0] = FRAME_VERSION;
  f[1] = TYPE_HEARTBEAT;
  f[2] = ROLES.indexOf(h.role);
  f[3] = GUEST_STATES.indexOf(h.guest);
  f[4] = WATCHDOG_STATES.indexOf(h.watchdog);
  f[5] = h.cpuLoad === null ? 255 : Math.max(0, Math.min(100, Math.round(h.cpuLoad)));
  f[6] = h.priority & 0xff;
  f[7] = L;
  name.copy(f, 8);
  f.writeUInt32BE(h.generation >>> 0, 8 + L);
  f.writeUInt32BE(h.seq >>> 0, 12 + L);
  createHmac('sha256', key).update(f.subarray(0, 16 + L)).digest().copy(f, 16 + L, 0, MAC_BYTES);
  f.writeUInt32BE(crc32(f.subarray(0, 28 + L)), 28 + L);
  return f;
}

export function decodeHeartbeat(f: Buffer, key: Buffer): Heartbeat | DecodeError {
  if (f.length < 33) return 'malformed';
  const L = f[7]!;
  if (L < 1 || L > 32 || f.length !== 32 + L) return 'malformed';
  if (f.readUInt32BE(28 + L) !== crc32(f.subarray(0, 28 + L))) return 'crc';
  if (f[0] !== FRAME_VERSION || f[1] !== TYPE_HEARTBEAT) return 'version';
  const mac = createHmac('sha256', key).update(f.subarray(0, 16 + L)).digest().subarray(0, MAC_BYTES);
  if (!timingSafeEqual(mac, f.subarray(16 + L, 28 + L))) return 'mac';
  const role = ROLES[f[2]!];
  const guest = GUEST_STATES[f[3]!];
  const watchdog = WATCHDOG_STATES[f[4]!];
  if (!role || !guest || !watchdog) return 'malformed';
  return {
    sender: f.subarray(8, 8 + L).toString('latin1'),
    generation: f.readUInt32BE(8 + L),
    seq: f.readUInt32BE(12 + L),
    role,
    guest,
    watchdog,
    cpuLoad: f[5] === 255 ? null : f[5]!,
    priority: f[6]!,
  };
}

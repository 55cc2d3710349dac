/**
 * Heartbeat frames: the same bytes on every partner link (UDP payload on Ethernet, SLIP-framed on
 * serial). Authenticated with HMAC-SHA256 (truncated to 96 bits, enough for a frame that is stale in
 * milliseconds) under the pair's shared key, then a CRC-32 so line noise is told apart from forgery.
 *
 *   0  u8   version (2)           8  u8   name length L (1-32)
 *   1  u8   type (1 = heartbeat)  9  L    sender name (ASCII)
 *   2  u8   role                  9+L  u32 boot generation of the sender
 *   3  u8   guest state           13+L u32 echo: the receiver's boot generation as the sender last
 *   4  u8   watchdog state                 heard it (0: none yet), binding the frame to that boot
 *   5  u8   CPU load % (255 = ?)  17+L u64 sequence number (never wraps: 2^53 frames)
 *   6  u8   priority              25+L 12  HMAC-SHA256(key, bytes 0..25+L)[0..12]
 *   7  u8   controller health     37+L u32 CRC-32 of bytes 0..37+L
 *           (0 ok, 1 hung: the sender's controller stopped answering its membership process)
 * Pure functions; no I/O.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';

export const FRAME_VERSION = 2;
export const TYPE_HEARTBEAT = 1;
const MAC_BYTES = 12;

/** The wire carries a role as its index here: append only. */
export const ROLES = ['STARTING', 'BACKUP', 'PRIMARY', 'FENCING', 'FAULT', 'STOPPING', 'WAITING'] as const;
export type Role = (typeof ROLES)[number];
export const GUEST_STATES = ['none', 'stopped', 'starting', 'running', 'restarting', 'failed'] as const;
export type GuestHealth = (typeof GUEST_STATES)[number];
export const WATCHDOG_STATES = ['none', 'kicking', 'starving'] as const;
export type WatchdogHealth = (typeof WATCHDOG_STATES)[number];
export const CONTROLLER_HEALTH = ['ok', 'hung'] as const;
export type ControllerHealth = (typeof CONTROLLER_HEALTH)[number];
/** Frame bytes besides the sender's name. */
const FIXED_BYTES = 41;

export interface Heartbeat {
  sender: string;
  generation: number;
  /** The receiver's boot generation as the sender last heard it (0: none yet). */
  echo: number;
  /** 64-bit on the wire; a JS number is exact up to 2^53. */
  seq: number;
  role: Role;
  guest: GuestHealth;
  watchdog: WatchdogHealth;
  /** CPU load in percent, or null when unknown. */
  cpuLoad: number | null;
  priority: number;
  /** The sender's controller as its membership process sees it. */
  health: ControllerHealth;
}

export type DecodeError = 'malformed' | 'crc' | 'version' | 'mac';

export function encodeHeartbeat(h: Heartbeat, key: Buffer): Buffer {
  const name = Buffer.from(h.sender, 'latin1');
  if (name.length < 1 || name.length > 32) throw new RangeError('sender name must be 1-32 bytes');
  if (!Number.isSafeInteger(h.seq) || h.seq < 0) throw new RangeError('sequence number must be a safe non-negative integer');
  const L = name.length;
  const f = Buffer.alloc(FIXED_BYTES + L);
  f[0] = FRAME_VERSION;
  f[1] = TYPE_HEARTBEAT;
  f[2] = ROLES.indexOf(h.role);
  f[3] = GUEST_STATES.indexOf(h.guest);
  f[4] = WATCHDOG_STATES.indexOf(h.watchdog);
  f[5] = h.cpuLoad === null ? 255 : Math.max(0, Math.min(100, Math.round(h.cpuLoad)));
  f[6] = h.priority & 0xff;
  f[7] = CONTROLLER_HEALTH.indexOf(h.health);
  f[8] = L;
  name.copy(f, 9);
  f.writeUInt32BE(h.generation >>> 0, 9 + L);
  f.writeUInt32BE(h.echo >>> 0, 13 + L);
  f.writeBigUInt64BE(BigInt(h.seq), 17 + L);
  createHmac('sha256', key).update(f.subarray(0, 25 + L)).digest().copy(f, 25 + L, 0, MAC_BYTES);
  f.writeUInt32BE(crc32(f.subarray(0, 37 + L)), 37 + L);
  return f;
}

export function decodeHeartbeat(f: Buffer, key: Buffer): Heartbeat | DecodeError {
  if (f.length < FIXED_BYTES + 1) return 'malformed';
  const L = f[8]!;
  if (L < 1 || L > 32 || f.length !== FIXED_BYTES + L) return 'malformed';
  if (f.readUInt32BE(37 + L) !== crc32(f.subarray(0, 37 + L))) return 'crc';
  if (f[0] !== FRAME_VERSION || f[1] !== TYPE_HEARTBEAT) return 'version';
  const mac = createHmac('sha256', key).update(f.subarray(0, 25 + L)).digest().subarray(0, MAC_BYTES);
  if (!timingSafeEqual(mac, f.subarray(25 + L, 37 + L))) return 'mac';
  const role = ROLES[f[2]!];
  const guest = GUEST_STATES[f[3]!];
  const watchdog = WATCHDOG_STATES[f[4]!];
  const health = CONTROLLER_HEALTH[f[7]!];
  const seq = f.readBigUInt64BE(17 + L);
  if (!role || !guest || !watchdog || !health || seq > BigInt(Number.MAX_SAFE_INTEGER)) return 'malformed';
  return {
    sender: f.subarray(9, 9 + L).toString('latin1'),
    generation: f.readUInt32BE(9 + L),
    echo: f.readUInt32BE(13 + L),
    seq: Number(seq),
    role,
    guest,
    watchdog,
    cpuLoad: f[5] === 255 ? null : f[5]!,
    priority: f[6]!,
    health,
  };
}

/**
 * Heartbeat frames: the same bytes on every partner link (UDP payload on Ethernet, SLIP-framed on
 * serial). Authenticated with HMAC-SHA256 (truncated to 96 bits, enough for a frame that is stale in
 * milliseconds) under the pair's shared key, then a CRC-32 so line noise is told apart from forgery.
 *
 *   0  u8   version (3; 2 from    8  u8   name length L (1-32)
 *           the previous firmware)
 *   1  u8   type (1 = heartbeat)  9  L    sender name (ASCII)
 *   2  u8   role                  9+L  u32 boot generation of the sender
 *   3  u8   guest state           13+L u32 echo: the receiver's boot generation as the sender last
 *   4  u8   watchdog state                 heard it (0: none yet), binding the frame to that boot
 *   5  u8   CPU load % (255 = ?)  17+L u64 sequence number (never wraps: 2^53 frames)
 *   6  u8   priority              25+L 12  HMAC-SHA256(key, bytes 0..25+L)[0..12]
 *   7  u8   controller health     37+L u32 CRC-32 of bytes 0..37+L
 *           (0 ok, 1 hung: the sender's controller stopped answering its membership process)
 * Version 3 says only "this sender speaks TLS partner channels": its layout is version 2's, byte for
 * byte. Version 2 is what the firmware deployed before TLS partner channels sends (its decoder refuses
 * any other version byte); this board sends it while its partner is heard only in version 2 (see
 * docs/ha.md, "Rolling upgrade from the previous firmware"). Pure functions; no I/O.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';

/** The version this firmware sends: version 2's layout, and TLS partner channels. */
export const FRAME_VERSION = 3;
/** The previous firmware's version of the same layout (partner channels before TLS). */
export const FRAME_VERSION_2 = 2;
/** Every heartbeat version this firmware decodes (1: frame-v1.ts). */
export type HeartbeatVersion = 1 | 2 | 3;
export const TYPE_HEARTBEAT = 1;
const MAC_BYTES = 12;

/** The wire carries a role as its index here: append only. */
export const ROLES = ['STARTING', 'BACKUP', 'PRIMARY', 'FENCING', 'FAULT', 'STOPPING', 'WAITING'] as const;
export type Role = (typeof ROLES)[number];
export const GUEST_STATES = ['none', 'stopped', 'starting', 'running', 'restarting', 'failed'] as const;
export type GuestHealth = (typeof GUEST_STATES)[number];
export const WATCHDOG_STATES = ['none', 'kicking', 'starving'] as const;
export type WatchdogHealth = (typeof WATCHDOG_STATES)[number];
/**
 * 'hung': the controller's main loop stopped answering its membership process; 'gone': the controller
 * process exited without stopping in order (a crash, SIGKILL): the membership process's last
 * heartbeats before it falls silent (a dying gasp). Either way the board serves nobody: fence it now.
 */
export const CONTROLLER_HEALTH = ['ok', 'hung', 'gone'] as const;
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

/**
 * Where a frame version puts the name's length (the name follows it) and how many bytes it has
 * besides the name; every version ends with the MAC (12 bytes) and the CRC (4), and has the same
 * bytes 0-6. Shared with frame-v1.ts, the previous firmware's layout.
 */
export interface FrameLayout {
  version: number;
  fixedBytes: number;
  nameLengthAt: number;
}
const LAYOUT: FrameLayout = { version: FRAME_VERSION, fixedBytes: FIXED_BYTES, nameLengthAt: 8 };
const LAYOUT_V2: FrameLayout = { ...LAYOUT, version: FRAME_VERSION_2 };

/** A new frame of `layout` holding bytes 0-6 and the sender's name; returns it and the name's length L. */
export function startFrame(h: Heartbeat, layout: FrameLayout): { f: Buffer; L: number } {
  const name = Buffer.from(h.sender, 'latin1');
  if (name.length < 1 || name.length > 32) throw new RangeError('sender name must be 1-32 bytes');
  const L = name.length;
  const f = Buffer.alloc(layout.fixedBytes + L);
  f[0] = layout.version;
  f[1] = TYPE_HEARTBEAT;
  f[2] = ROLES.indexOf(h.role);
  f[3] = GUEST_STATES.indexOf(h.guest);
  f[4] = WATCHDOG_STATES.indexOf(h.watchdog);
  f[5] = h.cpuLoad === null ? 255 : Math.max(0, Math.min(100, Math.round(h.cpuLoad)));
  f[6] = h.priority & 0xff;
  f[layout.nameLengthAt] = L;
  name.copy(f, layout.nameLengthAt + 1);
  return { f, L };
}

/** Writes the MAC over everything before it, then the CRC over everything before that. */
export function sealFrame(f: Buffer, L: number, key: Buffer, layout: FrameLayout): Buffer {
  const macAt = layout.fixedBytes - MAC_BYTES - 4 + L;
  createHmac('sha256', key).update(f.subarray(0, macAt)).digest().copy(f, macAt, 0, MAC_BYTES);
  f.writeUInt32BE(crc32(f.subarray(0, macAt + MAC_BYTES)), macAt + MAC_BYTES);
  return f;
}

/** Checks a frame of `layout`: length, CRC (line noise), version and type, MAC (forgery); returns L. */
export function openFrame(f: Buffer, key: Buffer, layout: FrameLayout): number | DecodeError {
  if (f.length < layout.fixedBytes + 1) return 'malformed';
  const L = f[layout.nameLengthAt]!;
  if (L < 1 || L > 32 || f.length !== layout.fixedBytes + L) return 'malformed';
  const macAt = layout.fixedBytes - MAC_BYTES - 4 + L;
  if (f.readUInt32BE(macAt + MAC_BYTES) !== crc32(f.subarray(0, macAt + MAC_BYTES))) return 'crc';
  if (f[0] !== layout.version || f[1] !== TYPE_HEARTBEAT) return 'version';
  const mac = createHmac('sha256', key).update(f.subarray(0, macAt)).digest().subarray(0, MAC_BYTES);
  if (!timingSafeEqual(mac, f.subarray(macAt, macAt + MAC_BYTES))) return 'mac';
  return L;
}

/** Bytes 0-6 and the name of an opened frame, or undefined if an enumerated value is unknown. */
export function commonFields(f: Buffer, L: number, layout: FrameLayout): Pick<Heartbeat, 'sender' | 'role' | 'guest' | 'watchdog' | 'cpuLoad' | 'priority'> | undefined {
  const role = ROLES[f[2]!];
  const guest = GUEST_STATES[f[3]!];
  const watchdog = WATCHDOG_STATES[f[4]!];
  if (!role || !guest || !watchdog) return undefined;
  const name = layout.nameLengthAt + 1;
  return { sender: f.subarray(name, name + L).toString('latin1'), role, guest, watchdog, cpuLoad: f[5] === 255 ? null : f[5]!, priority: f[6]! };
}

/** A frame of version 3 (this firmware) or, with version 2, byte for byte what the previous firmware sends. */
export function encodeHeartbeat(h: Heartbeat, key: Buffer, version: 2 | 3 = FRAME_VERSION): Buffer {
  if (!Number.isSafeInteger(h.seq) || h.seq < 0) throw new RangeError('sequence number must be a safe non-negative integer');
  const layout = version === FRAME_VERSION_2 ? LAYOUT_V2 : LAYOUT;
  const { f, L } = startFrame(h, layout);
  f[7] = CONTROLLER_HEALTH.indexOf(h.health);
  f.writeUInt32BE(h.generation >>> 0, 9 + L);
  f.writeUInt32BE(h.echo >>> 0, 13 + L);
  f.writeBigUInt64BE(BigInt(h.seq), 17 + L);
  return sealFrame(f, L, key, layout);
}

/** A frame of version 3 or 2 (the same strict checks; decodeAnyHeartbeat says which). */
export function decodeHeartbeat(f: Buffer, key: Buffer): Heartbeat | DecodeError {
  const layout = f[0] === FRAME_VERSION_2 ? LAYOUT_V2 : LAYOUT;
  const L = openFrame(f, key, layout);
  if (typeof L === 'string') return L;
  const common = commonFields(f, L, layout);
  const health = CONTROLLER_HEALTH[f[7]!];
  const seq = f.readBigUInt64BE(17 + L);
  if (!common || !health || seq > BigInt(Number.MAX_SAFE_INTEGER)) return 'malformed';
  return { ...common, generation: f.readUInt32BE(9 + L), echo: f.readUInt32BE(13 + L), seq: Number(seq), health };
}

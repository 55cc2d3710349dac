/**
 * Ethernet, ARP, IPv4 and UDP encoding for the private wire between the controller and its guest's
 * emulated NIC. Only what that wire needs: ARP replies for the controller's address, and UDP in
 * IPv4 without options or fragments. Pure functions, no I/O.
 */

export const ETH_IPV4 = 0x0800;
export const ETH_ARP = 0x0806;
const IPPROTO_UDP = 17;

export function macToBuffer(mac: string): Buffer {
  return Buffer.from(mac.split(':').map((h) => Number.parseInt(h, 16)));
}

export function ipToBuffer(ip: string): Buffer {
  return Buffer.from(ip.split('.').map((o) => Number.parseInt(o, 10)));
}

export function bufferToIp(b: Buffer, off = 0): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

function checksum(buf: Buffer, start: number, end: number): number {
  let sum = 0;
  for (let i = start; i < end - 1; i += 2) sum += buf.readUInt16BE(i);
  if ((end - start) % 2) sum += buf[end - 1]! << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

export interface UdpDatagram {
  srcMac: Buffer;
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

export interface ArpRequest {
  senderMac: Buffer;
  senderIp: string;
  targetIp: string;
}

export type ParsedFrame =
  | { kind: 'udp'; udp: UdpDatagram }
  | { kind: 'arp-request'; arp: ArpRequest }
  | { kind: 'other' };

export function parseFrame(f: Buffer): ParsedFrame {
  if (f.length < 14) return { kind: 'other' };
  const type = f.readUInt16BE(12);
  if (type === ETH_ARP && f.length >= 42) {
    const op = f.readUInt16BE(20);
    if (op !== 1 || f.readUInt16BE(14) !== 1 || f.readUInt16BE(16) !== ETH_IPV4) return { kind: 'other' };
    return { kind: 'arp-request', arp: { senderMac: f.subarray(22, 28), senderIp: bufferToIp(f, 28), targetIp: bufferToIp(f, 38) } };
  }
  if (type !== ETH_IPV4 || f.length < 34) return { kind: 'other' };
  const ihl = (f[14]! & 0x0f) * 4;
  if (f[14]! >> 4 !== 4 || ihl < 20 || f[23] !== IPPROTO_UDP) return { kind: 'other' };
  const fragment = f.readUInt16BE(20) & 0x3fff; // MF flag or offset: not a whole datagram
  if (fragment) return { kind: 'other' };
  const totalLen = f.readUInt16BE(16);
  const udp = 14 + ihl;
  if (f.length < udp + 8 || 14 + totalLen > f.length) return { kind: 'other' };
  const udpLen = f.readUInt16BE(udp + 4);
  if (udpLen < 8 || udp + udpLen > 14 + totalLen) return { kind: 'other' };
  return {
    kind: 'udp',
    udp: {
      srcMac: f.subarray(6, 12),
      srcIp: bufferToIp(f, 26),
      dstIp: bufferToIp(f, 30),
      srcPort: f.readUInt16BE(udp),
      dstPort: f.readUInt16BE(udp + 2),
      payload: f.subarray(udp + 8, udp + udpLen),
    },
  };
}

export function buildArpReply(ourMac: Buffer, ourIp: string, req: ArpRequest): Buffer {
  const f = Buffer.alloc(42);
  req.senderMac.copy(f, 0);
  ourMac.copy(f, 6);
  f.writeUInt16BE(ETH_ARP, 12);
  f.writeUInt16BE(1, 14); // Ethernet
  f.writeUInt16BE(ETH_IPV4, 16);
  f[18] = 6;
  f[19] = 4;
  f.writeUInt16BE(2, 20); // reply
  ourMac.copy(f, 22);
  ipToBuffer(ourIp).copy(f, 28);
  req.senderMac.copy(f, 32);
  ipToBuffer(req.senderIp).copy(f, 38);
  return f;
}

export interface UdpFrameSpec {
  srcMac: Buffer;
  dstMac: Buffer;
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  payload: Buffer;
  /** IPv4 identification field. */
  ipId?: number;
}

export function buildUdpFrame(s: UdpFrameSpec): Buffer {
  const udpLen = 8 + s.payload.length;
  const f = Buffer.alloc(14 + 20 + udpLen);
  s.dstMac.copy(f, 0);
  s.srcMac.copy(f, 6);
  f.writeUInt16BE(ETH_IPV4, 12);
  f[14] = 0x45;
  f.writeUInt16BE(20 + udpLen, 16);
  f.writeUInt16BE((s.ipId ?? 0) & 0xffff, 18);
  f.writeUInt16BE(0x4000, 20); // don't fragment
  f[22] = 64;
  f[23] = IPPROTO_UDP;
  ipToBuffer(s.srcIp).copy(f, 26);
  ipToBuffer(s.dstIp).copy(f, 30);
  f.writeUInt16BE(checksum(f, 14, 34), 24);
  f.writeUInt16BE(s.srcPort, 34);
  f.writeUInt16BE(s.dstPort, 36);
  f.writeUInt16BE(udpLen, 38);
  f.writeUInt16BE(0, 40); // UDP checksum optional over IPv4
  s.payload.copy(f, 42);
  return f;
}

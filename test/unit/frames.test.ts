import assert from 'node:assert/strict';
import fc from 'fast-check';
import { buildArpReply, buildUdpFrame, macToBuffer, parseFrame } from '../../src/hw/guestnet/frames.js';
import { ClientMap } from '../../src/guest/client-map.js';

const A = macToBuffer('52:54:00:00:00:01');
const B = macToBuffer('52:54:00:12:34:56');

describe('guest wire frames', () => {
  it('round-trips a UDP datagram', () => {
    const f = buildUdpFrame({ srcMac: A, dstMac: B, srcIp: '10.0.0.1', dstIp: '10.0.0.2', srcPort: 20001, dstPort: 5000, payload: Buffer.from('q1 STATS') });
    const p = parseFrame(f);
    assert.equal(p.kind, 'udp');
    if (p.kind !== 'udp') return;
    assert.equal(p.udp.srcIp, '10.0.0.1');
    assert.equal(p.udp.dstIp, '10.0.0.2');
    assert.equal(p.udp.srcPort, 20001);
    assert.equal(p.udp.dstPort, 5000);
    assert.equal(p.udp.payload.toString(), 'q1 STATS');
  });

  it('writes a valid IPv4 header checksum', () => {
    const f = buildUdpFrame({ srcMac: A, dstMac: B, srcIp: '10.0.0.1', dstIp: '10.0.0.2', srcPort: 1, dstPort: 2, payload: Buffer.from('x') });
    let sum = 0;
    for (let i = 14; i < 34; i += 2) sum += f.readUInt16BE(i);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    assert.equal(sum, 0xffff);
  });

  it('answers an ARP request for our address', () => {
    const req = { senderMac: B, senderIp: '10.0.0.2', targetIp: '10.0.0.1' };
    const r = buildArpReply(A, '10.0.0.1', req);
    assert.equal(r.readUInt16BE(20), 2);
    assert.deepEqual(r.subarray(0, 6), B);
    assert.equal(parseFrame(r).kind, 'other', 'a reply is not a request');
  });

  it('never throws on random bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      const p = parseFrame(Buffer.from(bytes));
      if (p.kind === 'udp') assert.ok(p.udp.payload.length <= bytes.length);
    }), { numRuns: 5000 });
  });

  it('rejects truncated and fragmented datagrams', () => {
    const f = buildUdpFrame({ srcMac: A, dstMac: B, srcIp: '10.0.0.1', dstIp: '10.0.0.2', srcPort: 1, dstPort: 2, payload: Buffer.from('hello world') });
    assert.equal(parseFrame(f.subarray(0, f.length - 3)).kind, 'other');
    const frag = Buffer.from(f);
    frag.writeUInt16BE(0x2000, 20); // more fragments
    assert.equal(parseFrame(frag).kind, 'other');
  });
});

describe('ClientMap', () => {
  it('gives each client one stable port and maps back', () => {
    const m = new ClientMap(100, 102);
    const a = m.portFor({ address: '127.0.0.1', port: 4000 });
    assert.equal(m.portFor({ address: '127.0.0.1', port: 4000 }), a);
    const b = m.portFor({ address: '127.0.0.2', port: 4000 });
    assert.notEqual(a, b);
    assert.deepEqual(m.clientOf(b!), { address: '127.0.0.2', port: 4000 });
  });

  it('refuses a new client rather than reuse a port that is still held', () => {
    const m = new ClientMap(100, 101);
    assert.equal(m.portFor({ address: '127.0.0.1', port: 1 }), 100);
    assert.equal(m.portFor({ address: '127.0.0.1', port: 2 }), 101);
    assert.equal(m.portFor({ address: '127.0.0.1', port: 3 }), undefined);
    assert.equal(m.refused, 1);
    assert.equal(m.clientOf(100)?.port, 1);
  });
});

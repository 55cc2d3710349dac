/**
 * A hostile flood for the input-bounds integration test, run inside the chassis' service namespace:
 * datagrams to the service address from many source addresses (which the test added to that
 * namespace, in 203.0.113.0/24) and ever new source ports (a pool of sockets, a few replaced every
 * tick). Mixed content: one in three a valid request with a fresh id, the rest datagrams the guest
 * would ignore (empty, a 17-byte id, a control byte) and oversized ones. Bounded: stops by itself
 * after the given duration and prints one JSON line with what it sent.
 *
 * argv: target address, port, duration ms, datagrams per second, first source address (a.b.c.d), count of addresses
 */
import { createSocket, type Socket } from 'node:dgram';

const [target, portS, durationS, rateS, firstS, countS] = process.argv.slice(2);
const port = Number(portS);
const durationMs = Number(durationS);
const rate = Number(rateS);
const base = firstS!.split('.').map(Number);
const addresses = Array.from({ length: Number(countS) }, (_, i) => `${base[0]}.${base[1]}.${base[2]}.${base[3]! + i}`);

const POOL = 100;
const TICK_MS = 10;
const REPLACE_PER_TICK = 4;
let nextAddress = 0;
const sources = new Set<string>();
let sent = 0;
let sendErrors = 0;
const kinds = { valid: 0, noId: 0, oversized: 0 };

function open(): Promise<Socket> {
  const s = createSocket('udp4');
  const address = addresses[nextAddress++ % addresses.length]!;
  return new Promise((resolve) => {
    s.on('error', () => { sendErrors++; });
    s.on('message', () => undefined); // replies (to valid requests) are read and ignored
    s.bind(0, address, () => { sources.add(`${address}:${s.address().port}`); resolve(s); });
  });
}

const pool: Socket[] = [];
for (let i = 0; i < POOL; i++) pool.push(await open());

const junk = [Buffer.alloc(0), Buffer.from('Q'.repeat(17) + ' STATS'), Buffer.from('\x01x STATS'), Buffer.alloc(700, 0x41)];
const perTick = Math.max(1, Math.round((rate * TICK_MS) / 1000));
let n = 0;
const end = Date.now() + durationMs;
while (Date.now() < end) {
  for (let i = 0; i < perTick; i++) {
    const s = pool[(n + i) % POOL]!;
    let msg: Buffer;
    if (n % 3 === 0) { msg = Buffer.from(`f${n.toString(36)} STATS`); kinds.valid++; } else {
      msg = junk[n % junk.length]!;
      if (msg.length > 512) kinds.oversized++; else kinds.noId++;
    }
    n++;
    s.send(msg, port, target, (e) => { if (e) sendErrors++; else sent++; });
  }
  for (let i = 0; i < REPLACE_PER_TICK; i++) {
    const k = Math.floor(Math.random() * POOL);
    pool[k]!.close();
    pool[k] = await open();
  }
  await new Promise((r) => setTimeout(r, TICK_MS));
}
for (const s of pool) s.close();
console.log(JSON.stringify({ sent, sendErrors, sources: sources.size, addresses: addresses.length, kinds }));

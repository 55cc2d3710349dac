/**
 * A hostile flood at the service address of a replicated pair on the simulated chassis (real QEMU,
 * real namespaces): for 60 s, datagrams from 250 source addresses in 203.0.113.0/24 (added to the
 * chassis' service namespace by this test) and thousands of source ports, a third of them valid requests
 * from ever new sources, the rest ignored by the guest or oversized, while a real client registers
 * and calls. The primary controller's memory stays bounded (RSS printed), the client is served,
 * nothing it had acknowledged is lost, and the pair stays protected without a failover.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { PACKAGE_ROOT, SERVICE_BRIDGE, SERVICE_PORT, SERVICE_VIP, partnerOf } from '../../src/sim/chassis/layout.js';
import { PairUnderTest } from '../support/pair.js';

const NAME = `fl${process.pid % 1000}`;
const FLOOD_MS = 60000;
const FLOOD_RATE = 600;
const ADDRESSES = 250;
const FIRST = '203.0.113.1';

/** The flood's source addresses, added to (or removed from) the service namespace's bridge. */
async function floodAddresses(verb: 'add' | 'del', ns: string): Promise<void> {
  const text = Array.from({ length: ADDRESSES }, (_, i) => `addr ${verb} 203.0.113.${1 + i}/32 dev ${SERVICE_BRIDGE}`).join('\n');
  await new Promise<void>((resolve, reject) => {
    const c = spawn('ip', ['-n', ns, '-force', '-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    c.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`ip -batch: ${err.trim().slice(0, 300)}`))));
    c.stdin.end(`${text}\n`);
  });
}

describe('a 60 s flood from thousands of sources at the service address (real QEMU)', function () {
  this.timeout(900000);
  const p = new PairUnderTest(NAME);
  let flood: ChildProcess | undefined;
  let addressesAdded = false;
  before(() => p.up());
  after(async () => {
    // The flood runs in its own process group (detached): end it, and only it, if still running.
    if (flood?.pid && flood.exitCode === null) { try { process.kill(-flood.pid, 'SIGKILL'); } catch { /* gone */ } }
    if (addressesAdded) await floodAddresses('del', p.chassis.layout.serviceNetns).catch(() => undefined);
    await p.down();
  });

  it('memory stays bounded, the real client is served and loses nothing acknowledged, the pair stays protected', async () => {
    const primary = p.primary;
    const backup = partnerOf(primary);
    const ns = p.chassis.layout.serviceNetns;
    await floodAddresses('add', ns);
    addressesAdded = true;

    const rss = async () => ((await p.ctl(primary, 'status')) as { rssMb: number }).rssMb;
    const before = await rss();
    // Every 5 s: the primary's RSS and what its input path holds (printed whatever the outcome).
    const samples: Array<{ t: number; rssMb: number; view: string }> = [];
    let sampling = true;
    const sampler = (async () => {
      const t0 = Date.now();
      while (sampling) {
        const st = (await p.ctl(primary, 'status').catch(() => undefined)) as { rssMb: number; role: string; endpoint: Record<string, number>; replication: Record<string, any> } | undefined;
        const r = st?.replication;
        samples.push({ t: Math.round((Date.now() - t0) / 1000), rssMb: st?.rssMb ?? -1,
          view: r ? `${st!.role} protected=${r.protected} seq=${r.lastSeq} acked=${r.ackedSeq} delivered=${r.deliveredSeq} queued=${r.heldInputs} held=${r.heldReplies} pending=${r.pendingReplies} drops=${JSON.stringify(r.drops)} clients=${r.clients} noId=${st!.endpoint.noId}` : 'no status' });
        await new Promise((r) => setTimeout(r, 5000));
      }
    })();
    const printSamples = () => { for (const s of samples) console.log(`      t=${s.t}s RSS ${s.rssMb} MB ${s.view}`); };

    let floodResult: { sent: number; sources: number; kinds: Record<string, number> } | undefined;
    const floodDone = new Promise<void>((resolve) => {
      flood = spawn('ip', ['netns', 'exec', ns, process.execPath, join(PACKAGE_ROOT, 'dist', 'test', 'support', 'flood.js'),
        SERVICE_VIP, String(SERVICE_PORT), String(FLOOD_MS), String(FLOOD_RATE), FIRST, String(ADDRESSES)], { detached: true, stdio: ['ignore', 'pipe', 'inherit'] });
      createInterface({ input: flood.stdout! }).on('line', (l) => { try { floodResult = JSON.parse(l); } catch { /* not ours */ } });
      flood.on('exit', () => resolve());
    });

    // The real client: load with retries and verification for the whole flood (the flood starts 2 s in).
    let res: Awaited<ReturnType<PairUnderTest['loadThrough']>>['res'];
    try {
      res = (await p.loadThrough(FLOOD_MS + 4000, 2000, async () => undefined, 'FLx')).res;
    } finally {
      await floodDone;
      sampling = false;
      await sampler;
      printSamples();
    }
    const after = await rss();

    const st = (await p.ctl(primary, 'status')) as { endpoint: Record<string, number>; replication: Record<string, any> };
    const rb = (await p.ctl(backup, 'replication.status')).replication;
    console.log(`      flood: ${JSON.stringify(floodResult)}`);
    console.log(`      client: ${res.acked} answered, ${res.registered} registered`);
    console.log(`      primary RSS (MB): before ${before}, after ${after}`);
    console.log(`      endpoint: ${JSON.stringify(st.endpoint)}`);
    console.log(`      replication: drops ${JSON.stringify(st.replication.drops)}, pending replies ${st.replication.pendingReplies}, clients ${st.replication.clients}, protected ${st.replication.protected}`);

    assert.ok(floodResult && floodResult.sources > 2000, `the flood came from thousands of sources (${floodResult?.sources})`);
    assert.ok(st.endpoint.requests! > floodResult.kinds.valid!, 'the flood\'s valid requests were sequenced (not dropped): the bounds held under real traffic');
    assert.ok(st.endpoint.noId! > 1000 && st.endpoint.oversized! > 1000, 'the flood reached the primary\'s endpoint and its junk was dropped there');
    // Bounded: the structures' own bounds (defaults: 8192 pending replies, 512 queued inputs, the
    // client map's 5120-entry reply-cache mirror plus what the queue may hold), and the RSS: the
    // first passing run grew 12 MB (94 -> 106) over ~36 000 datagrams from ~20 000 sources; 60 MB is
    // what a leak of ~2 KB per datagram or ~3 KB per source would pass.
    assert.ok(st.replication.pendingReplies <= 8192, `pending replies ${st.replication.pendingReplies}`);
    assert.ok(st.replication.heldInputs <= 512 * 2, `inputs queued ${st.replication.heldInputs}`);
    assert.ok(st.endpoint.replyCacheMirror! <= 4096 + 1024, `reply-cache mirror ${st.endpoint.replyCacheMirror}`);
    const peakClients = Math.max(...samples.map((s) => Number(/clients=(\d+)/.exec(s.view)?.[1] ?? 0)));
    assert.ok(peakClients <= 4096 + 1024 + 512, `client identities peaked at ${peakClients}`);
    const peak = Math.max(...samples.map((s) => s.rssMb), after);
    assert.ok(peak - before < 60, `RSS grew by ${peak - before} MB during the flood`);
    // The real client was served throughout and nothing it had acknowledged is lost (loadThrough's checks).
    assert.ok(res.acked > 2000, `the real client was served (${res.acked} answered)`);
    // Protected, same roles, copies equal.
    assert.equal(st.replication.mode, 'primary');
    assert.equal(st.replication.protected, true, 'the pair stayed (or is again) protected');
    assert.equal(rb.mode, 'backup');
    assert.equal(st.replication.failovers ?? 0, 0);
    assert.deepEqual(await p.settledStates(), { same: true }, 'primary and backup states are identical');
    assert.deepEqual(p.guestCrashes(), []);
  });
});

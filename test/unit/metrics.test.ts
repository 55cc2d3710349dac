/**
 * Metrics: snapshots in, Prometheus text out (parsed back here), and the HTTP endpoint.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { Metrics, snapshotFrom, type MetricsSnapshot } from '../../src/mgmt/metrics.js';
import type { HaStatus } from '../../src/ha/ha-controller.js';
import type { GuestStatus } from '../../src/guest/supervisor.js';

interface Parsed {
  samples: Map<string, number>;
  types: Map<string, string>;
}

/** Parses the text format: `name{a="x",b="y"} value` lines, and # TYPE lines. Labels are sorted. */
function parse(text: string): Parsed {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (!line) continue;
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) { types.set(t[1]!, t[2]!); continue; }
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a valid sample line: ${line}`);
    const labels = m[2] ? [...m[2].matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)].map((x) => `${x[1]}=${x[2]}`).sort() : [];
    samples.set(`${m[1]}{${labels.join(',')}}`, Number(m[3]));
  }
  return { samples, types };
}

async function scrape(m: Metrics): Promise<Parsed> {
  return parse(await m.text());
}

function get(p: Parsed, name: string, labels: Record<string, string> = {}): number | undefined {
  const l = Object.entries({ board: 'sim-a', ...labels }).map(([k, v]) => `${k}=${v}`).sort();
  return p.samples.get(`${name}{${l.join(',')}}`);
}

const base: MetricsSnapshot = {
  board: 'sim-a',
  uptimeS: 12,
  role: 'PRIMARY',
  partner: 'alive',
  alarms: 0,
  links: [
    { name: 'serial', up: true, lastHeardMsAgo: 3, changes: 1, sent: 100, received: 98, rejected: { crc: 2, mac: 0 } },
    { name: 'ethernet', up: false, lastHeardMsAgo: null, changes: 2, sent: 100, received: 0 },
  ],
  inputSequence: { assigned: 41, delivered: 40 },
  replicationLag: { inputs: 1, seconds: 0.002 },
  replicationProtected: true,
  divergences: 0,
  inputLosses: 3,
  failovers: 1,
  fencing: { attempts: 1, failures: 0 },
  watchdog: { kicks: 500, kicking: true },
  guest: { state: 'running', restarts: 2, bootToReadyMs: 2500, requestsProcessed: 7 },
  endpoint: { requests: 9, replies: 8, clients: 3 },
};

describe('metrics', () => {
  it('exports every part of a snapshot in valid Prometheus text', async () => {
    const m = new Metrics({ processMetrics: false });
    m.update(base);
    const p = await scrape(m);
    assert.equal(get(p, 'understudy_up'), 1);
    assert.equal(get(p, 'understudy_uptime_seconds'), 12);
    assert.equal(get(p, 'understudy_role', { role: 'PRIMARY' }), 1);
    for (const r of ['STANDALONE', 'STARTING', 'BACKUP', 'FENCING', 'FAULT', 'STOPPING']) assert.equal(get(p, 'understudy_role', { role: r }), 0, r);
    assert.equal(get(p, 'understudy_partner_state', { state: 'alive' }), 1);
    assert.equal(get(p, 'understudy_link_up', { link: 'serial' }), 1);
    assert.equal(get(p, 'understudy_link_up', { link: 'ethernet' }), 0);
    assert.equal(get(p, 'understudy_link_last_heard_seconds', { link: 'serial' }), 0.003);
    assert.equal(get(p, 'understudy_link_last_heard_seconds', { link: 'ethernet' }), undefined, 'never heard: no sample');
    assert.equal(get(p, 'understudy_heartbeats_sent_total', { link: 'serial' }), 100);
    assert.equal(get(p, 'understudy_heartbeats_received_total', { link: 'serial' }), 98);
    assert.equal(get(p, 'understudy_heartbeats_rejected_total', { link: 'serial', reason: 'crc' }), 2);
    assert.equal(get(p, 'understudy_input_sequence', { stage: 'assigned' }), 41);
    assert.equal(get(p, 'understudy_replication_lag_inputs'), 1);
    assert.equal(get(p, 'understudy_replication_lag_seconds'), 0.002);
    assert.equal(get(p, 'understudy_failovers_total'), 1);
    assert.equal(get(p, 'understudy_replication_protected'), 1);
    assert.equal(get(p, 'understudy_replication_divergences_total'), 0);
    assert.equal(get(p, 'understudy_guest_input_losses_total'), 3);
    assert.equal(get(p, 'understudy_watchdog_kicks_total'), 500);
    assert.equal(get(p, 'understudy_watchdog_kicking'), 1);
    assert.equal(get(p, 'understudy_guest_state', { state: 'running' }), 1);
    assert.equal(get(p, 'understudy_guest_state', { state: 'failed' }), 0);
    assert.equal(get(p, 'understudy_guest_restarts_total'), 2);
    assert.equal(get(p, 'understudy_guest_boot_to_ready_seconds'), 2.5);
    assert.equal(get(p, 'understudy_guest_state_refused'), 0);
    assert.equal(get(p, 'understudy_service_requests_total'), 9);
    assert.equal(get(p, 'understudy_service_clients'), 3);
    assert.equal(p.types.get('understudy_failovers_total'), 'counter');
    assert.equal(p.types.get('understudy_role'), 'gauge');
    assert.equal(p.types.get('understudy_heartbeats_rejected_total'), 'counter');
  });

  it('counters follow absolute counts, and restart when a source restarts', async () => {
    const m = new Metrics({ processMetrics: false });
    m.update(base);
    m.update({ ...base, links: [{ ...base.links![0]!, sent: 150 }, base.links![1]!], guest: { ...base.guest!, restarts: 3 } });
    let p = await scrape(m);
    assert.equal(get(p, 'understudy_heartbeats_sent_total', { link: 'serial' }), 150);
    assert.equal(get(p, 'understudy_guest_restarts_total'), 3);
    m.update({ ...base, links: [{ ...base.links![0]!, sent: 5 }] }); // membership restarted; ethernet gone
    p = await scrape(m);
    assert.equal(get(p, 'understudy_heartbeats_sent_total', { link: 'serial' }), 5);
    assert.equal(get(p, 'understudy_link_up', { link: 'ethernet' }), undefined, 'a link that disappeared has no series');
    assert.equal(get(p, 'understudy_heartbeats_sent_total', { link: 'ethernet' }), undefined);
  });

  it('partner-channel rejections are counters by purpose and reason, mapped from the daemon\'s status', async () => {
    const m = new Metrics({ processMetrics: false });
    const snap = snapshotFrom({ board: 'sim-a', role: 'PRIMARY', channelRejections: { inputs: { record: 2, handshake: 5 }, upgrade: { handshake: 1 } } });
    m.update(snap);
    const p = await scrape(m);
    assert.equal(get(p, 'understudy_partner_channel_rejected_total', { purpose: 'inputs', reason: 'record' }), 2);
    assert.equal(get(p, 'understudy_partner_channel_rejected_total', { purpose: 'inputs', reason: 'handshake' }), 5);
    assert.equal(get(p, 'understudy_partner_channel_rejected_total', { purpose: 'upgrade', reason: 'handshake' }), 1);
    assert.equal(p.types.get('understudy_partner_channel_rejected_total'), 'counter');
  });

  it('per-hop timing and event-loop delay, mapped from the daemon\'s status, in seconds', async () => {
    const m = new Metrics({ processMetrics: false });
    const hop = (n: number, p50Ms: number | null, p99Ms: number | null) => ({ n, p50Ms, p99Ms, maxMs: p99Ms, buckets: {} });
    const replication = { protected: true, lastSeq: 5, ackedSeq: 5, deliveredSeq: 5, lagInputs: 0, divergences: 0, hops: { released: hop(40, 1.5, 12), covered: hop(0, null, null) } };
    m.update(snapshotFrom({ board: 'sim-a', role: 'PRIMARY', replication, eventLoopDelay: { lastWindow: { p99Ms: 3, maxMs: 40 } } }));
    const p = await scrape(m);
    assert.equal(get(p, 'understudy_replication_hop_seconds', { hop: 'released', quantile: '0.5' }), 0.0015);
    assert.equal(get(p, 'understudy_replication_hop_seconds', { hop: 'released', quantile: '0.99' }), 0.012);
    assert.equal(get(p, 'understudy_replication_hop_seconds', { hop: 'covered', quantile: '0.99' }), undefined, 'no sample for a hop nothing passed');
    assert.equal(get(p, 'understudy_replication_hop_inputs_total', { hop: 'released' }), 40);
    assert.equal(get(p, 'understudy_event_loop_delay_seconds', { quantile: 'max' }), 0.04);
    assert.equal(get(p, 'understudy_event_loop_delay_seconds', { quantile: '0.99' }), 0.003);
  });

  it('active alarms by type and severity (a cleared series goes to 0), SNMP notification counters by manager', async () => {
    const m = new Metrics({ processMetrics: false });
    const alarm = (t: string, sev: string, isCleared = false) => ({ alarmTypeId: t, perceivedSeverity: sev, isCleared });
    m.update(snapshotFrom({ board: 'sim-a', role: 'PRIMARY', alarmList: {
      alarms: [alarm('partner-link-down', 'major'), alarm('partner-link-down', 'major'), alarm('pair-unprotected', 'critical'), alarm('console-lockout', 'warning', true)],
      notifications: [{ manager: '192.0.2.50:162', sent: 4, failed: 1, dropped: 0 }],
    } }));
    let p = await scrape(m);
    assert.equal(get(p, 'understudy_alarms_active', { type: 'partner-link-down', severity: 'major' }), 2);
    assert.equal(get(p, 'understudy_alarms_active', { type: 'pair-unprotected', severity: 'critical' }), 1);
    assert.equal(get(p, 'understudy_alarms_active', { type: 'console-lockout', severity: 'warning' }), undefined, 'a cleared alarm is not active');
    assert.equal(get(p, 'understudy_snmp_notifications_sent_total', { manager: '192.0.2.50:162' }), 4);
    assert.equal(get(p, 'understudy_snmp_notifications_failed_total', { manager: '192.0.2.50:162' }), 1);
    m.update(snapshotFrom({ board: 'sim-a', role: 'PRIMARY', alarmList: { alarms: [alarm('partner-link-down', 'major')], notifications: [{ manager: '192.0.2.50:162', sent: 6, failed: 1, dropped: 0 }] } }));
    p = await scrape(m);
    assert.equal(get(p, 'understudy_alarms_active', { type: 'partner-link-down', severity: 'major' }), 1);
    assert.equal(get(p, 'understudy_alarms_active', { type: 'pair-unprotected', severity: 'critical' }), 0, 'cleared: the series stays, at 0');
    assert.equal(get(p, 'understudy_snmp_notifications_sent_total', { manager: '192.0.2.50:162' }), 6);
  });

  it('role and guest state are one-hot as they change; absent sections are left alone', async () => {
    const m = new Metrics({ processMetrics: false });
    m.update(base);
    m.update({ board: 'sim-a', role: 'BACKUP', guest: null });
    const p = await scrape(m);
    assert.equal(get(p, 'understudy_role', { role: 'PRIMARY' }), 0);
    assert.equal(get(p, 'understudy_role', { role: 'BACKUP' }), 1);
    assert.equal(get(p, 'understudy_guest_state', { state: 'none' }), 1);
    assert.equal(get(p, 'understudy_guest_state', { state: 'running' }), 0);
    assert.equal(get(p, 'understudy_watchdog_kicks_total'), 500, 'no watchdog section: unchanged');
    const sum = [...p.samples].filter(([k]) => k.startsWith('understudy_role{')).reduce((a, [, v]) => a + v, 0);
    assert.equal(sum, 1);
  });

  it('snapshotFrom maps the HA and guest status the daemon already has', () => {
    const ha = {
      board: 'sim-a', role: 'BACKUP', since: '', generation: 3, preferred: true,
      partner: { state: 'alive', lastHeardMsAgo: 1, since: '' },
      links: [{ name: 'serial', up: true, lastHeardMsAgo: 2, since: '', changes: 1, counters: { txFrames: 10, txDropped: 1, rxFrames: 9, errors: 0 }, rejected: { malformed: 0, crc: 1, version: 0, mac: 0, self: 0, stale: 0, 'old-generation': 0 } }],
      alarms: ['ethernet link down'],
      fencing: { method: 'simulated', attempts: 2, failures: 1 },
      watchdog: { device: '/dev/watchdog', kicks: 40, kicking: true },
      membershipProcess: { tid: 1, rtPriority: 0 },
      loopDelayMs: { membership: { p50: 0, p99: 0, max: 0 }, main: { p50: 0, p99: 0, max: 0 } },
    } as unknown as HaStatus;
    const guest = { state: 'running', guest: { name: 'dx', version: '1', nic: 'e1000', memoryMb: 128 }, restarts: [{ at: '', cause: 'x' }], bootToReadyMs: 900, console: { socket: '', log: '' } } as GuestStatus;
    const replication = { protected: true, lastSeq: 90, ackedSeq: 88, deliveredSeq: 85, lagInputs: 2, divergences: 1 };
    const s = snapshotFrom({ board: 'sim-a', role: 'BACKUP', ha, guest, endpoint: { requests: 1, replies: 1, clients: 1 }, uptimeS: 5, replication, failovers: 2, inputLosses: 4 });
    assert.deepEqual(s.inputSequence, { last: 90, acked: 88, delivered: 85 });
    assert.deepEqual(s.replicationLag, { inputs: 2 });
    assert.equal(s.replicationProtected, true);
    assert.equal(s.divergences, 1);
    assert.equal(s.failovers, 2);
    assert.equal(s.inputLosses, 4);
    assert.equal(snapshotFrom({ board: 'sim-a', role: 'PRIMARY', replication: { ...replication, protected: false, lagInputs: null } }).replicationLag, undefined, 'unprotected: no lag figure');
    assert.equal(s.guest?.stateRefused, false, 'no state-load outcome: nothing refused');
    const load = (expected: boolean, outcome: 'loaded' | 'empty') => snapshotFrom({ board: 'sim-a', role: 'STANDALONE', guest: { ...guest, stateLoad: { expected, outcome, at: '' } } }).guest?.stateRefused;
    assert.deepEqual([load(true, 'empty'), load(true, 'loaded'), load(false, 'empty')], [true, false, false], 'refused only when a saved state was expected and not loaded');
    assert.equal(s.partner, 'alive');
    assert.equal(s.alarms, 1);
    assert.deepEqual(s.links![0], { name: 'serial', up: true, lastHeardMsAgo: 2, changes: 1, sent: 10, received: 9, rejected: ha.links[0]!.rejected, txDropped: 1, errors: 0 });
    assert.deepEqual(s.fencing, { attempts: 2, failures: 1 });
    assert.deepEqual(s.watchdog, { kicks: 40, kicking: true });
    assert.deepEqual(s.guest, { state: 'running', restarts: 1, bootToReadyMs: 900, requestsProcessed: undefined, stateRefused: false });
  });

  it('onScrape refreshes the metrics at each scrape; a failing source serves the last values', async () => {
    const m = new Metrics({ processMetrics: false });
    let n = 0;
    m.onScrape(() => {
      n++;
      if (n === 3) throw new Error('source broke');
      return { board: 'sim-a', uptimeS: n * 10, role: n === 1 ? 'STARTING' : 'PRIMARY' };
    });
    assert.equal(get(await scrape(m), 'understudy_uptime_seconds'), 10);
    const p = await scrape(m);
    assert.equal(get(p, 'understudy_uptime_seconds'), 20);
    assert.equal(get(p, 'understudy_role', { role: 'PRIMARY' }), 1);
    assert.equal(get(await scrape(m), 'understudy_uptime_seconds'), 20, 'the source threw: last values');
  });

  describe('endpoint', () => {
    const m = new Metrics();
    let server: { close(): Promise<void>; port: number };
    before(async () => { m.update(base); server = await m.serve('127.0.0.1', 0); });
    after(() => server.close());

    const call = (method: string, path: string) => new Promise<{ status: number; type?: string; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: server.port, method, path }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => { body += d.toString(); });
        res.on('end', () => resolve({ status: res.statusCode!, type: res.headers['content-type'], body }));
      });
      req.on('error', reject);
      req.end();
    });

    it('GET /metrics answers the text format, with the process metrics too', async () => {
      const r = await call('GET', '/metrics');
      assert.equal(r.status, 200);
      assert.match(r.type!, /^text\/plain; version=0\.0\.4/);
      const p = parse(r.body);
      assert.equal(get(p, 'understudy_role', { role: 'PRIMARY' }), 1);
      assert.ok((get(p, 'process_resident_memory_bytes') ?? 0) > 0);
    });

    it('404 elsewhere, 405 for other methods', async () => {
      assert.equal((await call('GET', '/')).status, 404);
      assert.equal((await call('GET', '/metrics/x')).status, 404);
      assert.equal((await call('POST', '/metrics')).status, 405);
    });

    it('refuses a non-loopback address, and says when the port is taken', async () => {
      await assert.rejects(m.serve('0.0.0.0', 0), { code: 'US_ERR_CONFIG', message: /loopback/ });
      await assert.rejects(m.serve('127.0.0.1', server.port), { code: 'US_ERR_ADDRESS_IN_USE' });
    });
  });
});

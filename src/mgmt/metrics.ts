/**
 * Prometheus metrics of one board (prom-client, its own Registry): role, partner links and
 * heartbeats, input sequence and replication lag, failovers, fencing, watchdog, guest, service
 * endpoint, and the process's own footprint. The daemon fills a plain MetricsSnapshot from its parts
 * (snapshotFrom helps) and calls update(); serve() answers GET /metrics on a loopback address
 * (through metrics-endpoint.ts). Owns the registry only; reads nothing by itself.
 *
 * The sources keep absolute counts (frames sent since start, restarts so far…); update() turns them
 * into Prometheus counters by adding the difference, and restarts a series when a source count goes
 * down (its owner restarted), so rate() stays right.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { serveMetrics, type MetricsEndpoint } from './metrics-endpoint.js';
import { ROLES, GUEST_STATES } from '../ha/frame.js';
import type { HaStatus } from '../ha/ha-controller.js';
import type { GuestStatus } from '../guest/supervisor.js';
import type { ReplicationStatus } from '../replication/replicator.js';

/**
 * Every role a board can report: the pair's roles, STANDALONE for a board without a partner, and
 * CONFIG-ERROR for a controller up without serving (src/mgmt/not-serving.ts).
 */
export const METRIC_ROLES = ['STANDALONE', 'CONFIG-ERROR', ...ROLES] as const;
export const METRIC_GUEST_STATES = GUEST_STATES;
export const PARTNER_STATES = ['unknown', 'alive', 'dead'] as const;

export interface LinkSnapshot {
  /** serial, ethernet */
  name: string;
  up: boolean;
  /** null: never heard. */
  lastHeardMsAgo?: number | null;
  /** Times the link went up or down. */
  changes?: number;
  /** Heartbeat frames sent on this link since the controller started. */
  sent: number;
  /** Frames received on this link, accepted or not (rejected ones are also counted by reason). */
  received: number;
  /** Frames rejected, by reason (malformed, crc, version, mac, self, stale, old-generation, unbound). */
  rejected?: Record<string, number>;
  /** Frames that could not be sent (queue full, link down). */
  txDropped?: number;
  errors?: number;
}

/** What the daemon knows at one moment. Absent sections leave their metrics as they were. */
export interface MetricsSnapshot {
  board: string;
  uptimeS?: number;
  /** STANDALONE, CONFIG-ERROR, STARTING, BACKUP, PRIMARY, FENCING, FAULT, STOPPING, WAITING */
  role?: string;
  /** Unknown, alive or dead, as membership sees the partner. */
  partner?: string;
  links?: LinkSnapshot[];
  alarms?: number;
  /** The alarm list (src/store/alarms.ts): active alarms by type and severity; SNMP notifications by manager. */
  alarmList?: {
    active: Array<{ type: string; severity: string }>;
    notifications?: Array<{ manager: string; sent: number; failed: number; dropped: number }>;
  };
  /** Input sequence numbers by stage, e.g. { assigned, delivered, acknowledged } (set by replication). */
  inputSequence?: Record<string, number>;
  /** How far the backup is behind: inputs not yet acknowledged, and the age of the oldest one. */
  replicationLag?: { inputs?: number; seconds?: number };
  /** 1 while the backup holds an up-to-date clone (a failover would lose nothing). */
  replicationProtected?: boolean;
  /** Reply digests of primary and backup that differed (each triggers a re-clone). */
  divergences?: number;
  /** Times the guest copy on this board was found short of inputs it was handed (each triggers a re-clone). */
  inputLosses?: number;
  /** Times this board took over as primary from a failed partner. */
  failovers?: number;
  /** Partner-channel connections dropped, by purpose (inputs, migration, upgrade) and reason (src/replication/secure-channel.ts). */
  channelRejections?: Record<string, Record<string, number>>;
  /** The previous firmware's partner channels (no TLS): in use now (a rolling upgrade from it), connections by purpose. */
  legacyChannels?: { inUse: boolean; connections: Record<string, number> };
  /** Messages refused from the partner (each dropped its connection): channel → reason → count. */
  partnerMessagesRefused?: Partial<Record<string, Partial<Record<string, number>>>>;
  fencing?: { attempts: number; failures: number };
  watchdog?: { kicks: number; kicking: boolean } | null;
  guest?: {
    /** none, stopped, starting, running, restarting, failed */
    state: string;
    restarts: number;
    bootToReadyMs?: number;
    requestsProcessed?: number;
    /** The last boot came up without the saved state its disk held (refused: US_ERR_GUEST_STATE). */
    stateRefused?: boolean;
  } | null;
  endpoint?: { requests?: number; replies?: number; clients?: number };
  /** Inputs dropped or forgotten on the input path, by reason (cumulative). */
  inputDrops?: Record<string, number>;
  /** Requests remembered for output commit, waiting for their reply. */
  pendingReplies?: number;
  /** Backup: inputs logged since the last checkpoint, and checkpoints forced by the log's bound. */
  inputLog?: { sinceCheckpoint: number; forced: number };
  /** Per-hop timing since start (ms from an input's receipt; docs/replication.md, "Where the time goes"). */
  replicationHops?: Record<string, { n: number; p50Ms: number | null; p99Ms: number | null }>;
  /** The controller's event-loop delay over the last full window (ms). */
  eventLoopDelay?: { p99Ms: number; maxMs: number };
}

/** The reasons of understudy_input_dropped_total (docs/replication.md, bounds on the input path). */
export const INPUT_DROP_REASONS = ['oversized', 'no-id', 'rate-limited', 'queue-full', 'held-full', 'client-refused', 'pending-pruned', 'auth-foreign', 'auth-oversized', 'auth-unasked'] as const;

export interface MetricsOptions {
  /** Also export the process's own metrics (process_resident_memory_bytes, CPU, event loop…). Default true. */
  processMetrics?: boolean;
}

type Labels = Record<string, string>;

export class Metrics {
  readonly registry = new Registry();
  private readonly last = new Map<string, number>();
  private readonly knownLinks = new Set<string>();
  private readonly knownRejects = new Set<string>();
  private readonly knownStages = new Set<string>();
  private board?: string;

  private readonly up = this.gauge('understudy_up', 'Always 1 while the controller answers');
  private readonly uptime = this.gauge('understudy_uptime_seconds', 'Seconds since the controller started');
  private readonly role = this.gauge('understudy_role', 'One-hot: 1 for the role this board has now', ['role']);
  private readonly partner = this.gauge('understudy_partner_state', 'One-hot: the partner as membership sees it', ['state']);
  private readonly alarms = this.gauge('understudy_alarms', 'Alarms raised now (e.g. a partner link down)');
  private readonly alarmsActive = this.gauge('understudy_alarms_active', 'Active alarms of the alarm list (understudy alarms), by alarm type and X.733 perceived severity', ['type', 'severity']);
  private readonly snmpSent = this.counter('understudy_snmp_notifications_sent_total', 'SNMP notifications (alarm raise and clear) snmptrap sent, or a manager acknowledged (informs)', ['manager']);
  private readonly snmpFailed = this.counter('understudy_snmp_notifications_failed_total', 'SNMP notifications that could not be sent or were not acknowledged', ['manager']);
  private readonly snmpDropped = this.counter('understudy_snmp_notifications_dropped_total', 'SNMP notifications dropped from a full queue (a manager slower than the alarms)', ['manager']);
  private readonly knownAlarmSeries = new Set<string>();
  private readonly linkUp = this.gauge('understudy_link_up', '1 when the partner link carries heartbeats', ['link']);
  private readonly linkHeard = this.gauge('understudy_link_last_heard_seconds', 'Seconds since a valid heartbeat arrived on the link', ['link']);
  private readonly linkChanges = this.counter('understudy_link_changes_total', 'Times the link went up or down', ['link']);
  private readonly hbSent = this.counter('understudy_heartbeats_sent_total', 'Heartbeat frames sent', ['link']);
  private readonly hbReceived = this.counter('understudy_heartbeats_received_total', 'Heartbeat frames received, accepted or rejected', ['link']);
  private readonly hbRejected = this.counter('understudy_heartbeats_rejected_total', 'Heartbeat frames rejected, by reason', ['link', 'reason']);
  private readonly linkDropped = this.counter('understudy_link_tx_dropped_total', 'Frames that could not be sent', ['link']);
  private readonly linkErrors = this.counter('understudy_link_errors_total', 'Errors on the link (open, read, write)', ['link']);
  private readonly inputSeq = this.gauge('understudy_input_sequence', 'Last input sequence number, by stage', ['stage']);
  private readonly lagInputs = this.gauge('understudy_replication_lag_inputs', 'Inputs the backup has not acknowledged yet');
  private readonly lagSeconds = this.gauge('understudy_replication_lag_seconds', 'Age of the oldest input the backup has not acknowledged');
  private readonly protectedNow = this.gauge('understudy_replication_protected', '1 while the backup holds an up-to-date clone');
  private readonly divergences = this.counter('understudy_replication_divergences_total', 'Reply digests of primary and backup that differed');
  private readonly inputLosses = this.counter('understudy_guest_input_losses_total', 'Times the guest copy was found short of inputs it was handed (repaired by a re-clone)');
  private readonly channelRejected = this.counter('understudy_partner_channel_rejected_total', 'Partner-channel connections dropped for a failed handshake or an unauthenticated record, by purpose and reason', ['purpose', 'reason']);
  private readonly legacyInUse = this.gauge('understudy_partner_channel_legacy', '1 while the partner runs the previous firmware and the partner channels speak its protocol (no TLS): finish the rolling upgrade');
  private readonly legacyConnections = this.counter('understudy_partner_channel_legacy_connections_total', 'Partner-channel connections of the previous firmware\'s protocol (no TLS), by purpose', ['purpose']);
  private readonly partnerRefused = this.counter('understudy_partner_messages_refused_total', 'Messages from the partner refused (malformed, unknown type, ACK beyond what was sent…), each dropping its connection', ['channel', 'reason']);
  private readonly failovers = this.counter('understudy_failovers_total', 'Takeovers: this board became primary because its partner failed');
  private readonly fenceAttempts = this.counter('understudy_fencing_attempts_total', 'Attempts to power off the partner');
  private readonly fenceFailures = this.counter('understudy_fencing_failures_total', 'Failed attempts to power off the partner');
  private readonly wdKicks = this.counter('understudy_watchdog_kicks_total', 'Hardware watchdog kicks');
  private readonly wdKicking = this.gauge('understudy_watchdog_kicking', '1 while the hardware watchdog is being kicked');
  private readonly guestState = this.gauge('understudy_guest_state', 'One-hot: the state of the guest', ['state']);
  private readonly guestRestarts = this.counter('understudy_guest_restarts_total', 'Guest restarts by the supervisor');
  private readonly guestBoot = this.gauge('understudy_guest_boot_to_ready_seconds', 'Last boot: QEMU start to the application answering');
  private readonly guestStateRefused = this.gauge('understudy_guest_state_refused', '1 while the last boot came up without the saved state its disk holds (not serving; the operator decides)');
  private readonly guestRequests = this.counter('understudy_guest_requests_processed_total', 'Requests the guest application reports as processed');
  private readonly svcRequests = this.counter('understudy_service_requests_total', 'Requests received on the service endpoint');
  private readonly svcReplies = this.counter('understudy_service_replies_total', 'Replies sent from the service endpoint');
  private readonly svcClients = this.gauge('understudy_service_clients', 'Clients the service endpoint knows');
  private readonly inputDropped = this.counter('understudy_input_dropped_total', 'Requests dropped or forgotten on the input path, by reason', ['reason']);
  private readonly pendingReplies = this.gauge('understudy_replication_pending_replies', 'Requests remembered for output commit, waiting for their reply');
  private readonly logSince = this.gauge('understudy_checkpoint_logged_inputs', 'Backup: inputs logged since the last checkpoint');
  private readonly hopSeconds = this.gauge('understudy_replication_hop_seconds', 'Time from an input\'s receipt to a hop (forwarded, delivered, replied, covered, released, authAnswer, backupLogged, backupAcked), quantile since start', ['hop', 'quantile']);
  private readonly hopInputs = this.counter('understudy_replication_hop_inputs_total', 'Inputs timed at a hop', ['hop']);
  private readonly loopDelay = this.gauge('understudy_event_loop_delay_seconds', 'How late the controller\'s event loop ran over the last 10 s window (quantile 0.99, and the max)', ['quantile']);
  private readonly logForced = this.counter('understudy_checkpoint_forced_total', 'Checkpoints forced because the input log reached its bound');

  constructor(o: MetricsOptions = {}) {
    if (o.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
    this.up.set(1);
    for (const r of METRIC_ROLES) this.role.set({ role: r }, 0);
    for (const s of METRIC_GUEST_STATES) this.guestState.set({ state: s }, 0);
    for (const s of PARTNER_STATES) this.partner.set({ state: s }, 0);
  }

  update(s: MetricsSnapshot): void {
    if (s.board !== this.board) {
      this.board = s.board;
      this.registry.setDefaultLabels({ board: s.board });
    }
    if (s.uptimeS !== undefined) this.uptime.set(s.uptimeS);
    if (s.role !== undefined) this.oneHot(this.role, 'role', METRIC_ROLES, s.role);
    if (s.partner !== undefined) this.oneHot(this.partner, 'state', PARTNER_STATES, s.partner);
    if (s.alarms !== undefined) this.alarms.set(s.alarms);
    if (s.links) this.updateLinks(s.links);
    if (s.alarmList) this.updateAlarmList(s.alarmList);
    if (s.inputSequence) {
      for (const [stage, v] of Object.entries(s.inputSequence)) { this.inputSeq.set({ stage }, v); this.knownStages.add(stage); }
      for (const stage of [...this.knownStages]) if (!(stage in s.inputSequence)) { this.inputSeq.remove({ stage }); this.knownStages.delete(stage); }
    }
    if (s.replicationLag?.inputs !== undefined) this.lagInputs.set(s.replicationLag.inputs);
    if (s.replicationLag?.seconds !== undefined) this.lagSeconds.set(s.replicationLag.seconds);
    if (s.replicationProtected !== undefined) this.protectedNow.set(s.replicationProtected ? 1 : 0);
    if (s.divergences !== undefined) this.count(this.divergences, {}, s.divergences);
    if (s.failovers !== undefined) this.count(this.failovers, {}, s.failovers);
    if (s.inputLosses !== undefined) this.count(this.inputLosses, {}, s.inputLosses);
    for (const [purpose, reasons] of Object.entries(s.channelRejections ?? {})) {
      for (const [reason, n] of Object.entries(reasons)) this.count(this.channelRejected, { purpose, reason }, n);
    }
    if (s.legacyChannels) {
      this.legacyInUse.set(s.legacyChannels.inUse ? 1 : 0);
      for (const [purpose, n] of Object.entries(s.legacyChannels.connections)) this.count(this.legacyConnections, { purpose }, n);
    }
    for (const [channel, reasons] of Object.entries(s.partnerMessagesRefused ?? {})) {
      for (const [reason, n] of Object.entries(reasons ?? {})) this.count(this.partnerRefused, { channel, reason }, n ?? 0);
    }
    if (s.fencing) {
      this.count(this.fenceAttempts, {}, s.fencing.attempts);
      this.count(this.fenceFailures, {}, s.fencing.failures);
    }
    if (s.watchdog !== undefined) {
      this.wdKicking.set(s.watchdog?.kicking ? 1 : 0);
      if (s.watchdog) this.count(this.wdKicks, {}, s.watchdog.kicks);
    }
    if (s.guest !== undefined) {
      const g = s.guest;
      this.oneHot(this.guestState, 'state', METRIC_GUEST_STATES, g ? g.state : 'none');
      if (g) {
        this.count(this.guestRestarts, {}, g.restarts);
        if (g.bootToReadyMs !== undefined) this.guestBoot.set(g.bootToReadyMs / 1000);
        if (g.requestsProcessed !== undefined) this.count(this.guestRequests, {}, g.requestsProcessed);
        this.guestStateRefused.set(g.stateRefused ? 1 : 0);
      }
    }
    if (s.endpoint) {
      if (s.endpoint.requests !== undefined) this.count(this.svcRequests, {}, s.endpoint.requests);
      if (s.endpoint.replies !== undefined) this.count(this.svcReplies, {}, s.endpoint.replies);
      if (s.endpoint.clients !== undefined) this.svcClients.set(s.endpoint.clients);
    }
    if (s.inputDrops) for (const [reason, n] of Object.entries(s.inputDrops)) this.count(this.inputDropped, { reason }, n);
    if (s.pendingReplies !== undefined) this.pendingReplies.set(s.pendingReplies);
    if (s.inputLog) {
      this.logSince.set(s.inputLog.sinceCheckpoint);
      this.count(this.logForced, {}, s.inputLog.forced);
    }
    for (const [hop, h] of Object.entries(s.replicationHops ?? {})) {
      this.count(this.hopInputs, { hop }, h.n);
      if (h.p50Ms !== null) this.hopSeconds.set({ hop, quantile: '0.5' }, h.p50Ms / 1000);
      if (h.p99Ms !== null) this.hopSeconds.set({ hop, quantile: '0.99' }, h.p99Ms / 1000);
    }
    if (s.eventLoopDelay) {
      this.loopDelay.set({ quantile: '0.99' }, s.eventLoopDelay.p99Ms / 1000);
      this.loopDelay.set({ quantile: 'max' }, s.eventLoopDelay.maxMs / 1000);
    }
  }

  /**
   * Called before each scrape to refresh the metrics (instead of a timer: nothing runs while nobody
   * scrapes). A failing or slow source (over 2 s) does not fail the scrape: the last values are served.
   */
  onScrape(fn: () => MetricsSnapshot | Promise<MetricsSnapshot>): void {
    this.scrapeSource = fn;
  }

  private scrapeSource?: () => MetricsSnapshot | Promise<MetricsSnapshot>;

  /** The metrics in Prometheus text format (after refreshing them from onScrape's source). */
  async text(): Promise<string> {
    const src = this.scrapeSource;
    if (src) {
      let timer: NodeJS.Timeout | undefined;
      try {
        const snap = await Promise.race([
          Promise.resolve().then(src),
          new Promise<undefined>((r) => { timer = setTimeout(() => r(undefined), 2000); }),
        ]);
        if (snap) this.update(snap);
      } catch {
        // serve the last values
      } finally {
        clearTimeout(timer);
      }
    }
    return this.registry.metrics();
  }

  /** Serves GET /metrics on a loopback address (see metrics-endpoint.ts); port 0 picks one. */
  serve(address: string, port: number): Promise<MetricsEndpoint> {
    return serveMetrics(address, port, async () => ({ contentType: this.registry.contentType, body: await this.text() }));
  }

  // --------------------------------------------------------------------------------------------

  private updateAlarmList(a: NonNullable<MetricsSnapshot['alarmList']>): void {
    const counts = new Map<string, number>();
    for (const x of a.active) counts.set(JSON.stringify([x.type, x.severity]), (counts.get(JSON.stringify([x.type, x.severity])) ?? 0) + 1);
    // A series whose alarms all cleared goes to 0 (not away): a dashboard sees the clear.
    for (const k of [...this.knownAlarmSeries, ...counts.keys()]) {
      const [type, severity] = JSON.parse(k) as [string, string];
      this.alarmsActive.set({ type, severity }, counts.get(k) ?? 0);
      this.knownAlarmSeries.add(k);
    }
    for (const n of a.notifications ?? []) {
      this.count(this.snmpSent, { manager: n.manager }, n.sent);
      this.count(this.snmpFailed, { manager: n.manager }, n.failed);
      this.count(this.snmpDropped, { manager: n.manager }, n.dropped);
    }
  }

  private updateLinks(links: LinkSnapshot[]): void {
    const seen = new Set<string>();
    for (const l of links) {
      const link = { link: l.name };
      seen.add(l.name);
      this.knownLinks.add(l.name);
      this.linkUp.set(link, l.up ? 1 : 0);
      if (l.lastHeardMsAgo === null || l.lastHeardMsAgo === undefined) this.linkHeard.remove(link);
      else this.linkHeard.set(link, l.lastHeardMsAgo / 1000);
      if (l.changes !== undefined) this.count(this.linkChanges, link, l.changes);
      this.count(this.hbSent, link, l.sent);
      this.count(this.hbReceived, link, l.received);
      if (l.txDropped !== undefined) this.count(this.linkDropped, link, l.txDropped);
      if (l.errors !== undefined) this.count(this.linkErrors, link, l.errors);
      for (const [reason, n] of Object.entries(l.rejected ?? {})) {
        this.count(this.hbRejected, { link: l.name, reason }, n);
        this.knownRejects.add(`${l.name}\0${reason}`);
      }
    }
    for (const name of [...this.knownLinks]) {
      if (seen.has(name)) continue;
      this.knownLinks.delete(name);
      const link = { link: name };
      for (const m of [this.linkUp, this.linkHeard]) m.remove(link);
      for (const m of [this.linkChanges, this.hbSent, this.hbReceived, this.linkDropped, this.linkErrors]) { m.remove(link); this.last.delete(key(m, link)); }
      for (const k of [...this.knownRejects]) {
        const [l, reason] = k.split('\0') as [string, string];
        if (l !== name) continue;
        this.hbRejected.remove({ link: l, reason });
        this.last.delete(key(this.hbRejected, { link: l, reason }));
        this.knownRejects.delete(k);
      }
    }
  }

  /** Sets a counter to a source's absolute count. */
  private count(c: Counter<string>, labels: Labels, total: number): void {
    if (!Number.isFinite(total) || total < 0) return;
    const k = key(c, labels);
    const prev = this.last.get(k);
    this.last.set(k, total);
    if (prev === undefined) { c.inc(labels, total); return; }
    if (total >= prev) { if (total > prev) c.inc(labels, total - prev); return; }
    // The source restarted from zero: start the series again.
    c.remove(labels);
    c.inc(labels, total);
  }

  private oneHot(g: Gauge<string>, label: string, known: readonly string[], value: string): void {
    for (const v of known) g.set({ [label]: v }, v === value ? 1 : 0);
    if (!known.includes(value)) g.set({ [label]: value }, 1);
  }

  private gauge(name: string, help: string, labelNames: string[] = []): Gauge<string> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  private counter(name: string, help: string, labelNames: string[] = []): Counter<string> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }
}

function key(m: { name?: string } | object, labels: Labels): string {
  const name = (m as { name?: string }).name ?? '';
  return `${name}{${Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(',')}}`;
}

/**
 * Builds a snapshot from what the daemon has: its status, the HA controller's status (paired boards),
 * the guest supervisor's status, the replicator's status and the failover count.
 */
export function snapshotFrom(p: {
  board: string;
  uptimeS?: number;
  role: string;
  ha?: HaStatus;
  guest?: GuestStatus | null;
  endpoint?: Record<string, number>;
  replication?: (Pick<ReplicationStatus, 'protected' | 'lastSeq' | 'ackedSeq' | 'deliveredSeq' | 'lagInputs' | 'divergences'> & Partial<Pick<ReplicationStatus, 'drops' | 'pendingReplies'>>
    & { checkpoint?: { inputLog?: { sinceCheckpoint: number; forced: number } } | null; hops?: MetricsSnapshot['replicationHops'] }) | null;
  eventLoopDelay?: { lastWindow: { p99Ms: number; maxMs: number } | null };
  failovers?: number;
  inputLosses?: number;
  channelRejections?: Record<string, Partial<Record<string, number>>>;
  legacyChannels?: MetricsSnapshot['legacyChannels'];
  partnerMessages?: { byChannel: MetricsSnapshot['partnerMessagesRefused'] };
  alarmList?: { alarms: Array<{ alarmTypeId: string; perceivedSeverity: string; isCleared: boolean }>; notifications?: Array<{ manager: string; sent: number; failed: number; dropped: number }> };
}): MetricsSnapshot {
  const s: MetricsSnapshot = { board: p.board, uptimeS: p.uptimeS, role: p.role, failovers: p.failovers, inputLosses: p.inputLosses,
    partnerMessagesRefused: p.partnerMessages?.byChannel, legacyChannels: p.legacyChannels && { inUse: p.legacyChannels.inUse, connections: p.legacyChannels.connections } };
  if (p.channelRejections) {
    s.channelRejections = Object.fromEntries(Object.entries(p.channelRejections).map(([k, v]) =>
      [k, Object.fromEntries(Object.entries(v).filter((e): e is [string, number] => typeof e[1] === 'number'))]));
  }
  if (p.replication) {
    const r = p.replication;
    s.inputSequence = { last: r.lastSeq, acked: r.ackedSeq, delivered: r.deliveredSeq };
    if (r.lagInputs !== null) s.replicationLag = { inputs: r.lagInputs };
    s.replicationProtected = r.protected;
    s.divergences = r.divergences;
    if (r.pendingReplies !== undefined) s.pendingReplies = r.pendingReplies;
    if (r.hops) s.replicationHops = Object.fromEntries(Object.entries(r.hops).map(([k, h]) => [k, { n: h.n, p50Ms: h.p50Ms, p99Ms: h.p99Ms }]));
    if (r.checkpoint?.inputLog) s.inputLog = { sinceCheckpoint: r.checkpoint.inputLog.sinceCheckpoint, forced: r.checkpoint.inputLog.forced };
  }
  if (p.eventLoopDelay?.lastWindow) s.eventLoopDelay = { p99Ms: p.eventLoopDelay.lastWindow.p99Ms, maxMs: p.eventLoopDelay.lastWindow.maxMs };
  const e = p.endpoint;
  const d = p.replication?.drops;
  if (e || d) {
    s.inputDrops = {
      oversized: e?.oversized ?? 0, 'no-id': e?.noId ?? 0, 'rate-limited': e?.rateLimited ?? 0,
      'queue-full': d?.queueFull ?? 0, 'held-full': d?.heldFull ?? 0, 'client-refused': e?.clientsRefused ?? 0, 'pending-pruned': d?.pendingPruned ?? 0,
      'auth-foreign': e?.authIgnored ?? 0, 'auth-oversized': e?.authOversized ?? 0, 'auth-unasked': e?.authUnasked ?? 0,
    };
  }
  if (p.alarmList) {
    s.alarmList = { active: p.alarmList.alarms.filter((a) => !a.isCleared).map((a) => ({ type: a.alarmTypeId, severity: a.perceivedSeverity })), notifications: p.alarmList.notifications };
  }
  if (p.ha) {
    s.partner = p.ha.partner.state;
    // The previous firmware's channels in use is an alarm of its own (the HA layer cannot see it).
    s.alarms = p.ha.alarms.length + (p.legacyChannels?.inUse ? 1 : 0);
    s.links = p.ha.links.map((l) => ({
      name: l.name,
      up: l.up,
      lastHeardMsAgo: l.lastHeardMsAgo,
      changes: l.changes,
      sent: l.counters.txFrames,
      received: l.counters.rxFrames,
      rejected: { ...l.rejected },
      txDropped: l.counters.txDropped,
      errors: l.counters.errors,
    }));
    s.fencing = { attempts: p.ha.fencing.attempts, failures: p.ha.fencing.failures };
    s.watchdog = p.ha.watchdog ? { kicks: p.ha.watchdog.kicks, kicking: p.ha.watchdog.kicking } : null;
  }
  if (p.guest !== undefined) {
    s.guest = p.guest
      ? { state: p.guest.state, restarts: p.guest.restarts.length, bootToReadyMs: p.guest.bootToReadyMs, requestsProcessed: p.guest.requestsProcessed,
        stateRefused: !!p.guest.stateLoad && p.guest.stateLoad.expected && p.guest.stateLoad.outcome !== 'loaded' }
      : null;
  }
  if (p.endpoint) s.endpoint = { requests: p.endpoint.requests, replies: p.endpoint.replies, clients: p.endpoint.clients };
  return s;
}

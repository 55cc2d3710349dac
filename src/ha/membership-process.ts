/**
 * The membership process: heartbeats, link and partner verdicts, and the hardware watchdog kicks run
 * in a small process of their own, with an event loop and a heap of their own, so the controller's
 * main process (QMP, SQLite, status requests, its garbage collector) can never delay a heartbeat by
 * the milliseconds that separate a live partner from a dead one. Optionally SCHED_FIFO.
 * (A worker thread would be lighter, but serialport's native poller only runs on the main loop of
 * a process.)
 *
 * The watchdog is kicked only while the controller proves it is alive (a message at least every
 * `aliveTimeoutMs`) and has not asked to stop: a stuck controller gets its board reset. The process
 * dies with the controller (pdeathsig, and it exits when its IPC channel closes), so a dead
 * controller's board falls silent — after a dying gasp: two heartbeats saying the controller is gone
 * (health 'gone'), so the partner fences and takes over at once rather than after its priority
 * fencing delay (silence alone cannot tell a dead primary from a partition).
 * This file is both the process's entry point and, via MembershipProcess, its client. The links
 * (serialport) and the watchdog are imported by the process side only: the controller, which
 * imports this file for MembershipProcess, does not load serialport for nothing.
 */
import { execFile } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { EthernetLinkOptions, PartnerLink, SerialLinkOptions } from '../hw/links/links.js';
import { MEMBERSHIP_ENV, MEMBERSHIP_NODE_FLAGS } from '../core/footprint.js';
import { CLOCK_TICKS_PER_S, parseProcStat, procStateReader } from '../hw/proc-state.js';
import { ControllerWatch, type ControllerWatchStatus } from './controller-watch.js';
import { BusyLooks, SelfGovernor, threadTicks } from './rt-governor.js';
import type { ControllerHealth, GuestHealth, Heartbeat, HeartbeatVersion, Role } from './frame.js';
import { Membership, type IgnoredReason, type LinkState, type PartnerGenerations, type PartnerView } from './membership.js';

export interface MembershipConfig {
  self: string;
  priority: number;
  generation: number;
  /** The partner's generations as persisted. */
  known?: PartnerGenerations;
  keyHex: string;
  intervalMs: number;
  linkTimeoutMs: number;
  deadtimeMs: number;
  ethernet?: EthernetLinkOptions;
  serial?: SerialLinkOptions;
  watchdog?: { device: string; timeoutMs: number };
  /** SCHED_FIFO priority of the membership thread; 0 = normal scheduling. */
  rtPriority: number;
  /** The controller's main process (whose /proc state is read when an alive is late). */
  controllerPid: number;
  /** Silence of the controller's main loop after which it is reported hung, stopped or not (controller-watch.ts). */
  controllerHangMs: number;
}

export interface MembershipSnapshot {
  links: LinkState[];
  partner: PartnerView;
  loopDelayMs: { p50: number; p99: number; max: number };
  watchdog: { device: string; kicks: number; kicking: boolean; stopReason?: string } | null;
  thread: { tid: number | null; rtPriority: number; rtError?: string; rtDropped?: string };
  sent: number;
  /** The partner's generations and the frame version sent (1 or 2 while the partner speaks only that version). */
  generations?: PartnerGenerations & { sendVersion: HeartbeatVersion };
  /** The controller's main loop as this process sees it (its alive messages). */
  controller?: ControllerWatchStatus;
}

type ToWorker =
  | { t: 'config'; cfg: MembershipConfig }
  | { t: 'local'; role: Role; guest: GuestHealth; priority?: number }
  | { t: 'alive' }
  | { t: 'forget-partner' }
  | { t: 'set-generation'; generation: number }
  | { t: 'stop-kicking'; reason: string }
  | { t: 'snapshot'; id: number }
  | { t: 'adopt-partner'; id: number; partnerAddress: string; known: PartnerGenerations }
  | { t: 'stop'; magicClose: boolean };

type FromWorker =
  | { t: 'ready'; error?: string }
  | { t: 'link'; link: string; up: boolean; cause: string }
  | { t: 'partner-alive'; hb: Heartbeat }
  | { t: 'partner-update'; hb: Heartbeat }
  | { t: 'partner-dead'; silentMs: number }
  | { t: 'generations'; generations: PartnerGenerations }
  | { t: 'generation-behind'; echo: number }
  | { t: 'send-version'; version: HeartbeatVersion }
  | { t: 'partner-ignored'; hb: Heartbeat; reason: IgnoredReason }
  | { t: 'watchdog-stopped'; reason: string }
  | { t: 'bad-mac'; links: string[]; frames: number }
  | { t: 'controller-health'; health: 'ok' | 'hung'; reason?: string; silentMs: number }
  | { t: 'snapshot'; id: number; snapshot: MembershipSnapshot }
  | { t: 'adopted'; id: number; closed?: string[]; error?: string }
  | { t: 'stopped' }
  | { t: 'rt-dropped'; reason: string; threads: string };

/** The membership process's answers to a request of the controller's, by its id. */
type Answer = Extract<FromWorker, { t: 'snapshot' | 'adopted' }>;

/**
 * The real-time governor (run by the controller, outside the membership process, so a busy loop in
 * it cannot stop it): above this share of one core (all its threads) at RT_GOVERNOR_LOOKS looks in
 * a row, RT_GOVERNOR_PERIOD_MS apart, the membership process loses real-time scheduling. Its normal
 * use is a few % of a core. Quick, because while it spins at the kernel's real-time cap the
 * controllers of the board (and, with both boards spinning, of the partner) get 5 % of a core:
 * beyond the controller hang bound (1 s) the partner fences a board that is not hung.
 */
export const RT_GOVERNOR_SHARE = 0.5;
export const RT_GOVERNOR_PERIOD_MS = 200;
export const RT_GOVERNOR_LOOKS = 3;
/** Kicks per watchdog timeout: four chances before it fires. */
const KICKS_PER_TIMEOUT = 4;
/** Period of the bad-MAC report: frames rejected for their MAC since the last one, if any. */
const BAD_MAC_REPORT_MS = 1000;
/**
 * The controller's main loop sends an alive this often. A stopped controller is recognised once one
 * is late (ALIVE_INTERVAL_MS + ALIVE_LATE_MS of silence, then a /proc read): that is most of what a
 * SIGSTOP costs before the partner takes over, so it is short. Its price is ~50 small IPC messages a
 * second (measured in BENCHMARKS.md, bench/daemon).
 */
export const ALIVE_INTERVAL_MS = 20;
/** Lateness of an alive before the controller's process state is read. */
export const ALIVE_LATE_MS = 3;
/** How long the membership process outlives its controller: its dying gasp (two heartbeats) written. */
export const DYING_GASP_MS = 15;

// ---------------------------------------------------------------- membership process side
async function runMembership(cfg: MembershipConfig): Promise<void> {
  const { EthernetLink, SerialLink } = await import('../hw/links/links.js');
  const { LinuxWatchdog } = await import('../hw/watchdog/watchdog.js');
  const post = (m: FromWorker) => { if (process.connected) process.send!(m); };
  let local: { role: Role; guest: GuestHealth; priority?: number } = { role: 'STARTING', guest: 'none' };
  let lastAlive = performance.now();
  const aliveTimeoutMs = cfg.watchdog ? Math.max(200, cfg.watchdog.timeoutMs / 2) : 0;
  const controller = new ControllerWatch({
    now: () => performance.now(), lateMs: ALIVE_INTERVAL_MS + ALIVE_LATE_MS, processState: procStateReader(cfg.controllerPid),
    // At the latest when the watchdog kicks stop: the board will be reset, its partner need not wait for that.
    hangAfterMs: aliveTimeoutMs ? Math.min(cfg.controllerHangMs, aliveTimeoutMs) : cfg.controllerHangMs,
  });
  // The verdict goes into every heartbeat; a change is also told to the controller (which reads it
  // only if it runs again) and written to the board's log by this process, which is not hung.
  let reported: 'ok' | 'hung' = 'ok';
  let gone = false;
  let stopping = false;
  const health = (): ControllerHealth => {
    if (gone) return 'gone';
    const v = controller.check();
    if (v.health !== reported) {
      reported = v.health;
      const silentMs = Math.round(controller.silentMs);
      post({ t: 'controller-health', health: v.health, reason: v.reason, silentMs });
      if (v.health === 'hung') process.stderr.write(`${JSON.stringify({ level: 50, time: Date.now(), board: cfg.self, component: 'membership', reason: v.reason, msg: 'controller hung: reported in the heartbeats' })}\n`);
    }
    return v.health;
  };
  let kickingAllowed = true;
  let stopReason: string | undefined;
  const watchdog = cfg.watchdog ? new LinuxWatchdog(cfg.watchdog.device, cfg.watchdog.timeoutMs) : undefined;

  const links: PartnerLink[] = [];
  if (cfg.ethernet) links.push(new EthernetLink(cfg.ethernet));
  if (cfg.serial) links.push(new SerialLink(cfg.serial));
  const m = new Membership({
    self: cfg.self, priority: cfg.priority, generation: cfg.generation, known: cfg.known, key: Buffer.from(cfg.keyHex, 'hex'),
    intervalMs: cfg.intervalMs, linkTimeoutMs: cfg.linkTimeoutMs, deadtimeMs: cfg.deadtimeMs, links,
    local: () => ({ ...local, watchdog: watchdog ? (kickingAllowed ? 'kicking' : 'starving') : 'none', cpuLoad: cpuLoadPercent(), health: health() }),
  });
  m.on('link', (link, up, cause) => post({ t: 'link', link, up, cause }));
  m.on('partner-alive', (hb) => post({ t: 'partner-alive', hb }));
  m.on('partner-update', (hb) => post({ t: 'partner-update', hb }));
  m.on('partner-dead', (silentMs) => post({ t: 'partner-dead', silentMs }));
  m.on('generations', (generations) => post({ t: 'generations', generations }));
  m.on('generation-behind', (echo) => post({ t: 'generation-behind', echo }));
  m.on('send-version', (version) => post({ t: 'send-version', version }));
  m.on('partner-ignored', (hb, reason) => post({ t: 'partner-ignored', hb, reason }));

  const thread: MembershipSnapshot['thread'] = { tid: process.pid, rtPriority: 0 };
  if (cfg.rtPriority > 0) {
    // Every thread real-time (serialport writes go through libuv's thread pool), the helpers one
    // step below the event loop: SCHED_FIFO does not time-slice, so an equal-priority GC helper on
    // the same core would hold the loop off for as long as it runs.
    const chrt = (args: string[]) => new Promise<string | undefined>((resolve) => execFile('chrt', args, (err) => resolve(err?.message.trim())));
    const helpers = Math.max(1, cfg.rtPriority - 1);
    // The helpers --reset-on-fork; the event loop thread not: the one child it starts, the chrt of
    // its own governor (rt-governor.ts), must run at its priority to take that priority away.
    const err = (await chrt(['-a', '-R', '-f', '-p', String(helpers), String(process.pid)])) ?? (await chrt(['-f', '-p', String(cfg.rtPriority), String(process.pid)]));
    if (err) thread.rtError = err; else thread.rtPriority = cfg.rtPriority;
  }
  let selfGovernor: SelfGovernor | undefined;

  let kickTimer: NodeJS.Timeout | undefined;
  const stopKicking = (reason: string) => {
    if (!kickingAllowed) return;
    kickingAllowed = false;
    stopReason = reason;
    clearInterval(kickTimer);
    post({ t: 'watchdog-stopped', reason });
  };
  try {
    if (watchdog) {
      watchdog.open();
      watchdog.kick();
      kickTimer = setInterval(() => {
        const silent = performance.now() - lastAlive;
        if (silent > aliveTimeoutMs) stopKicking(`controller main thread unresponsive for ${Math.round(silent)} ms`);
        else watchdog.kick();
      }, Math.max(10, Math.floor(cfg.watchdog!.timeoutMs / KICKS_PER_TIMEOUT)));
    }
    await m.start();
  } catch (e) {
    post({ t: 'ready', error: (e as Error).message });
    return;
  }

  // Frames with a bad MAC: a partner that holds another key (alive, misconfigured) or a forger. The
  // controller decides what that means; it hears of them once a second at most, and only when they came.
  const macSeen = new Map<string, number>();
  const badMacTimer = setInterval(() => {
    const links: string[] = [];
    let frames = 0;
    for (const l of m.links) {
      const more = l.rejected.mac - (macSeen.get(l.name) ?? 0);
      if (more > 0) { links.push(l.name); frames += more; macSeen.set(l.name, l.rejected.mac); }
    }
    if (frames) post({ t: 'bad-mac', links, frames });
  }, BAD_MAC_REPORT_MS);

  // The controller is gone (even by SIGKILL) without stopping in order: a dying gasp — one heartbeat
  // on every link saying so (health 'gone'), so the partner fences this board and takes over at once
  // instead of after its priority fencing delay (it cannot tell a dead primary from a partition) —
  // then fall silent, leaving the watchdog armed. A second gasp a heartbeat later covers one lost
  // frame; the process is gone DYING_GASP_MS after the controller.
  const gasp = () => {
    if (stopping || gone) return;
    gone = true;
    process.stderr.write(`${JSON.stringify({ level: 50, time: Date.now(), board: cfg.self, component: 'membership', msg: 'controller exited: dying gasp sent, falling silent' })}\n`);
    m.sendHeartbeat();
    setTimeout(() => m.sendHeartbeat(), cfg.intervalMs).unref();
    setTimeout(() => process.exit(0), DYING_GASP_MS).unref();
  };
  process.on('SIGUSR2', gasp); // pdeathsig: the controller died (even by SIGKILL)
  process.on('disconnect', gasp); // its IPC channel closed
  process.on('message', (msg: ToWorker) => {
    switch (msg.t) {
      case 'local':
        local = { role: msg.role, guest: msg.guest, priority: msg.priority };
        m.sendHeartbeat();
        break;
      case 'alive':
        lastAlive = performance.now();
        controller.alive();
        break;
      case 'forget-partner':
        m.forgetPartner();
        break;
      case 'set-generation':
        m.setGeneration(msg.generation);
        break;
      case 'stop-kicking':
        stopKicking(msg.reason);
        break;
      case 'adopt-partner':
        m.adoptPartner(msg.partnerAddress, msg.known).then(
          (closed) => post({ t: 'adopted', id: msg.id, closed }),
          (e: Error) => post({ t: 'adopted', id: msg.id, error: e.message }),
        );
        break;
      case 'snapshot':
        post({
          t: 'snapshot', id: msg.id, snapshot: {
            links: m.links, partner: m.partnerView, loopDelayMs: m.loopDelayMs, sent: m.sent, thread, generations: m.generations,
            controller: controller.status(),
            watchdog: watchdog ? { device: watchdog.path, kicks: watchdog.kicks, kicking: kickingAllowed, stopReason } : null,
          },
        });
        break;
      case 'stop':
        stopping = true;
        void (async () => {
          local = { ...local, role: 'STOPPING' };
          m.sendHeartbeat();
          await m.stop();
          clearInterval(kickTimer);
          clearInterval(badMacTimer);
          selfGovernor?.stop();
          if (msg.magicClose) watchdog?.magicClose(); else watchdog?.abandon();
          post({ t: 'stopped' });
          process.disconnect();
        })();
        break;
    }
  });
  post({ t: 'ready' });
  if (thread.rtPriority > 0) {
    selfGovernor = new SelfGovernor({
      dropped: (reason, threads) => {
        thread.rtPriority = 0;
        thread.rtDropped = reason;
        post({ t: 'rt-dropped', reason, threads });
      },
    });
  }
}

// The heartbeat carries the 1-minute load average (the kernel updates it every 5 s): read it once a
// second, not at every heartbeat (os.cpus() parses /proc at each call: 5 % of this process's CPU).
const CPU_COUNT = cpus().length;
let cpuLoadCache = { at: -Infinity, value: null as number | null };
function cpuLoadPercent(): number | null {
  const now = performance.now();
  if (now - cpuLoadCache.at >= 1000) {
    cpuLoadCache = { at: now, value: CPU_COUNT ? Math.min(100, (loadavg()[0]! / CPU_COUNT) * 100) : null };
  }
  return cpuLoadCache.value;
}

if (process.env.UNDERSTUDY_MEMBERSHIP === '1' && process.send) {
  process.once('message', (m: ToWorker) => {
    if (m.t === 'config') void runMembership(m.cfg);
  });
}

// ---------------------------------------------------------------- controller side
export declare interface MembershipProcess {
  on(ev: 'link', fn: (link: string, up: boolean, cause: string) => void): this;
  on(ev: 'partner-alive' | 'partner-update', fn: (hb: Heartbeat) => void): this;
  on(ev: 'partner-dead', fn: (silentMs: number) => void): this;
  on(ev: 'generations', fn: (g: PartnerGenerations) => void): this;
  on(ev: 'generation-behind', fn: (echo: number) => void): this;
  on(ev: 'send-version', fn: (version: HeartbeatVersion) => void): this;
  on(ev: 'partner-ignored', fn: (hb: Heartbeat, reason: IgnoredReason) => void): this;
  on(ev: 'watchdog-stopped', fn: (reason: string) => void): this;
  /** Frames rejected for a bad MAC since the last report (at most one a second), and on which links. */
  on(ev: 'bad-mac', fn: (links: string[], frames: number) => void): this;
  on(ev: 'controller-health', fn: (health: 'ok' | 'hung', silentMs: number, reason?: string) => void): this;
  on(ev: 'exit', fn: (code: number) => void): this;
  /** The governor dropped the membership process's real-time scheduling (why, and its threads' CPU ticks). */
  on(ev: 'rt-dropped', fn: (reason: string, threads: string) => void): this;
}



/** Runs the membership process and mirrors what it reports. */
export class MembershipProcess extends EventEmitter {
  private worker?: ChildProcess;
  private aliveTimer?: NodeJS.Timeout;
  private governor?: NodeJS.Timeout;
  private governorLast?: { ticks: number; at: number };
  private readonly busy = new BusyLooks(RT_GOVERNOR_SHARE, RT_GOVERNOR_LOOKS);
  /** Why the governor took real-time scheduling away, once it has. */
  rtDropped?: string;
  private nextId = 1;
  /** Requests that wait for the membership process's answer (snapshot, adopt-partner), by id. */
  private waiters = new Map<number, (m: Answer) => void>();
  private partner: Heartbeat | undefined;
  private partnerState: PartnerView['state'] = 'unknown';
  /** 'partner-alive' reports received (adoptPartner tells whether the new partner was heard before its answer). */
  private aliveReports = 0;
  private partnerSince = Date.now();
  private lastHeard = 0;
  private stopped = false;

  /** CPU ticks (user + system, all threads) of a process; /proc by default (tests give their own). */
  readTicks: (pid: number) => number = (pid) => parseProcStat(readFileSync(`/proc/${pid}/stat`, 'latin1')).cpuTicks;

  constructor(readonly cfg: MembershipConfig) {
    super();
  }

  get pid(): number | undefined {
    return this.worker?.pid;
  }

  async start(): Promise<void> {
    // NODE_OPTIONS is the controller's: the membership process has its own flags.
    const { NODE_OPTIONS: _, ...env } = process.env;
    // The kernel signals it when the controller dies (SIGUSR2, which nothing else sends it): it sends
    // its dying gasp and exits. Its default action, before the handler is installed, is to terminate.
    const w = spawn('setpriv', ['--pdeathsig', 'SIGUSR2', '--', process.execPath, ...MEMBERSHIP_NODE_FLAGS,
      fileURLToPath(import.meta.url)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...env, ...MEMBERSHIP_ENV, UNDERSTUDY_MEMBERSHIP: '1' } });
    this.worker = w;
    w.on('exit', (code) => { if (!this.stopped) this.emit('exit', code); });
    w.on('error', (e) => this.emit('error', e));
    const ready = await new Promise<{ error?: string }>((resolve) => {
      // One handler from the start: heartbeats heard while the links open arrive before 'ready'.
      w.on('message', (m: FromWorker) => { if (m.t === 'ready') resolve(m); else this.onMessage(m); });
      w.once('exit', (code) => resolve({ error: `membership process exited (${code})` }));
      w.once('error', (e) => resolve({ error: `membership process: ${e.message}` }));
      w.send({ t: 'config', cfg: this.cfg } satisfies ToWorker);
    });
    if (ready.error) {
      w.kill('SIGKILL');
      throw new Error(ready.error);
    }
    this.aliveTimer = setInterval(() => this.post({ t: 'alive' }), ALIVE_INTERVAL_MS);
    if (this.cfg.rtPriority > 0 && w.pid) this.governor = setInterval(() => this.govern(w.pid!), RT_GOVERNOR_PERIOD_MS);
  }

  /**
   * SCHED_FIFO on every thread means that whatever makes the membership process busy (a bug, a heap
   * at its limit, a flood of frames) takes the core from this controller and from QEMU, whose
   * silence then looks like a dead board to the partner: a fence storm the pair caused itself (seen
   * once on the test machine: both boards' membership processes at the kernel's real-time cap,
   * 95 %, for minutes, the load average at 27). Sustained use above the bound drops all its threads
   * to normal scheduling; the board's log gets the per-thread CPU (a GC helper or the event loop).
   */
  govern(pid: number): void {
    let now: { ticks: number; at: number };
    try {
      now = { ticks: this.readTicks(pid), at: performance.now() };
    } catch {
      clearInterval(this.governor); // the process is gone
      return;
    }
    const last = this.governorLast;
    this.governorLast = now;
    if (!last) return;
    if (!this.busy.look((now.ticks - last.ticks) * 1000 / CLOCK_TICKS_PER_S, now.at - last.at)) return;
    clearInterval(this.governor);
    const threads = threadTicks(pid);
    const reason = this.busy.why(RT_GOVERNOR_PERIOD_MS);
    execFile('chrt', ['-a', '-o', '-p', '0', String(pid)], (err) => {
      if (this.rtDropped) return; // its own governor was first
      this.rtDropped = err ? `${reason}; dropping it failed: ${err.message.trim()}` : reason;
      this.emit('rt-dropped', this.rtDropped, threads);
    });
  }

  private onMessage(m: FromWorker): void {
    switch (m.t) {
      case 'link': this.emit('link', m.link, m.up, m.cause); break;
      case 'partner-alive':
      case 'partner-update':
        this.partner = m.hb;
        this.lastHeard = performance.now();
        if (m.t === 'partner-alive') { this.partnerState = 'alive'; this.partnerSince = Date.now(); this.aliveReports++; }
        this.emit(m.t, m.hb);
        break;
      case 'partner-dead':
        this.partnerState = 'dead';
        this.partnerSince = Date.now();
        this.emit('partner-dead', m.silentMs);
        break;
      case 'generations': this.emit('generations', m.generations); break;
      case 'generation-behind': this.emit('generation-behind', m.echo); break;
      case 'send-version': this.emit('send-version', m.version); break;
      case 'partner-ignored': this.emit('partner-ignored', m.hb, m.reason); break;
      case 'watchdog-stopped': this.emit('watchdog-stopped', m.reason); break;
      case 'bad-mac': this.emit('bad-mac', m.links, m.frames); break;
      case 'controller-health': this.emit('controller-health', m.health, m.silentMs, m.reason); break;
      case 'rt-dropped':
        // Its own governor was first: the controller's has nothing left to do.
        clearInterval(this.governor);
        if (!this.rtDropped) { this.rtDropped = m.reason; this.emit('rt-dropped', m.reason, m.threads); }
        break;
      case 'snapshot':
      case 'adopted': this.waiters.get(m.id)?.(m); this.waiters.delete(m.id); break;
      default: break;
    }
  }

  private post(m: ToWorker): void {
    if (this.worker?.connected) this.worker.send(m);
  }

  /**
   * Our role and guest state, announced at once in a heartbeat; `priority`, the one advertised
   * instead of the profile's (undefined: the profile's).
   */
  setLocal(role: Role, guest: GuestHealth, priority?: number): void {
    this.post({ t: 'local', role, guest, priority });
  }

  forgetPartner(): void {
    this.partnerState = 'unknown';
    this.partnerSince = Date.now();
    this.post({ t: 'forget-partner' });
  }

  /** This board took a newer boot generation (it was behind its partner's record of it). */
  setGeneration(generation: number): void {
    this.post({ t: 'set-generation', generation });
  }

  stopKicking(reason: string): void {
    this.post({ t: 'stop-kicking', reason });
  }

  /** The partner as last reported (cheap, synchronous). */
  get partnerView(): PartnerView {
    return {
      state: this.partnerState,
      heartbeat: this.partner,
      lastHeardMsAgo: this.lastHeard ? Math.round(performance.now() - this.lastHeard) : null,
      since: new Date(this.partnerSince).toISOString(),
    };
  }

  /** Posts a request and resolves with the membership process's answer to it (by id), or rejects after `timeoutMs`. */
  private request<A extends Answer>(m: (id: number) => ToWorker, timeoutMs: number): Promise<A> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.waiters.delete(id); reject(new Error('membership process did not answer')); }, timeoutMs);
      this.waiters.set(id, (a) => { clearTimeout(timer); resolve(a as A); });
      this.post(m(id));
    });
  }

  async snapshot(timeoutMs = 2000): Promise<MembershipSnapshot> {
    const s = (await this.request<Extract<Answer, { t: 'snapshot' }>>((id) => ({ t: 'snapshot', id }), timeoutMs)).snapshot;
    return this.rtDropped ? { ...s, thread: { ...s.thread, rtPriority: 0, rtDropped: this.rtDropped } } : s;
  }

  /**
   * Another board becomes the partner (Membership.adoptPartner: only while none is heard). Resolves
   * with the links closed (those that cannot reach it); rejects with the membership's refusal.
   */
  async adoptPartner(partnerAddress: string, known: PartnerGenerations, timeoutMs = 2000): Promise<string[]> {
    const before = this.aliveReports;
    const r = await this.request<Extract<Answer, { t: 'adopted' }>>((id) => ({ t: 'adopt-partner', id, partnerAddress, known }), timeoutMs);
    if (r.error !== undefined) throw new Error(r.error);
    // The new partner may have been heard before this answer arrived (its 'partner-alive' came
    // first): that view is the new partner's and stays. Reset unconditionally, it read 'unknown'
    // for good (later frames only update), and the primary never cloned to the adopted spare
    // (n-plus-one test, 2026-12-06).
    if (this.aliveReports === before) {
      this.partner = undefined;
      this.partnerState = 'unknown';
      this.partnerSince = Date.now();
      this.lastHeard = 0;
    }
    return r.closed ?? [];
  }

  /** Stops heartbeats; with magicClose the watchdog is disarmed (orderly shutdown only). */
  async stop(magicClose: boolean): Promise<void> {
    if (!this.worker || this.stopped) return;
    this.stopped = true;
    clearInterval(this.aliveTimer);
    clearInterval(this.governor);
    const w = this.worker;
    if (w.exitCode !== null || w.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => { w.kill('SIGKILL'); resolve(); }, 2000);
      w.once('exit', () => { clearTimeout(timer); resolve(); });
      this.post({ t: 'stop', magicClose });
    });
  }
}

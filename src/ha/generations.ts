/**
 * The boot generations that make heartbeats replay- and restart-proof, durable in the board's store:
 * this board's own (Store.nextGeneration, on disk before it is used) and what it knows of its
 * partner's (PartnerGenerations: the highest heard, the one fenced, the highest heard in version 2 or later and in
 * version 3; a record without v3, written by an earlier firmware, reads as none heard in version 3),
 * written with an fsync each time the membership reports a change (a partner boot, a fence: rare).
 * It also owns what an operator must hear about them: a generation of ours that went back (the store
 * lost it), and a partner that is heard but ignored. It decides nothing about roles.
 */
import type { Logger } from '../core/log.js';
import type { Store } from '../store/journal.js';
import type { Heartbeat } from './frame.js';
import type { IgnoredReason, PartnerGenerations } from './membership.js';

const PARTNER_KEY = 'ha.partner-generations';

/**
 * Where a partner's generations are kept: under its name. The original single key (stores written
 * before N+1 re-protection, no name) is still written for a rollback to that firmware, now with the
 * partner's name in the record.
 */
export function partnerGenerationsKey(partner?: string): string {
  return partner ? `${PARTNER_KEY}/${partner}` : PARTNER_KEY;
}

/**
 * What this board knows of `partner`'s boots: its own record; else, for the profile's partner
 * (`profilePartner`), the single record of an earlier firmware if it names no partner (written when
 * a board had one) or names this one. A spare run with one pairing profile, then another, must not
 * judge its new partner by the old one's generations (it would ignore it, or take its heartbeats as
 * replays, until the echo sorted it out).
 */
export function loadPartnerGenerationsOf(store: Store, partner: string, profilePartner: boolean): PartnerGenerations {
  const own = partnerGenerationsKey(partner);
  if (store.getMeta(own) !== undefined) return loadPartnerGenerations(store, own);
  if (profilePartner) {
    let named: unknown;
    try {
      named = (JSON.parse(store.getMeta(PARTNER_KEY) ?? '{}') as { partner?: unknown }).partner;
    } catch { /* unreadable: read as none below */ }
    if (named === undefined || named === partner) return loadPartnerGenerations(store);
  }
  return { highest: 0, fenced: 0, v2: 0, v3: 0 };
}

export function loadPartnerGenerations(store: Store, key = PARTNER_KEY): PartnerGenerations {
  const none = { highest: 0, fenced: 0, v2: 0, v3: 0 };
  try {
    const g = JSON.parse(store.getMeta(key) ?? '{}') as Partial<PartnerGenerations>;
    const n = (x: unknown) => (Number.isSafeInteger(x) && (x as number) >= 0 ? (x as number) : 0);
    return { highest: n(g.highest), fenced: n(g.fenced), v2: n(g.v2), v3: n(g.v3) };
  } catch {
    return none; // never written by hand in practice; the echo binding still protects this boot
  }
}

export function savePartnerGenerations(store: Store, g: PartnerGenerations, key = PARTNER_KEY, partner?: string): void {
  store.setMetaDurably(key, JSON.stringify({ highest: g.highest, fenced: g.fenced, v2: g.v2, v3: g.v3, ...(partner ? { partner } : {}) }));
}

const IGNORED_WHY: Record<IgnoredReason, (hb: Heartbeat, k: PartnerGenerations) => string> = {
  fenced: (hb, k) => `generation ${hb.generation} is at or below the one it was fenced at (${k.fenced}): a frame of the fenced boot (replayed?), or its boot generation went back; it is asked to take a newer one`,
  'old-generation': (hb, k) => `generation ${hb.generation} is below the highest heard (${k.highest}): a replay, or its boot generation went back (store lost?); it is asked to take a newer one`,
  stale: (hb) => `sequence numbers of generation ${hb.generation} already seen: a replay, or the partner reuses a boot generation (its store rolled back?)`,
};

/** What BootGenerations follows: the membership process (or, in tests, a Membership). */
export interface GenerationSource {
  on(ev: 'generations', fn: (g: PartnerGenerations) => void): this;
  on(ev: 'generation-behind', fn: (echo: number) => void): this;
  on(ev: 'partner-ignored', fn: (hb: Heartbeat, reason: IgnoredReason) => void): this;
  on(ev: 'partner-alive', fn: (hb: Heartbeat) => void): this;
  setGeneration(generation: number): void;
}

/** This board's generation and its partner's, kept on disk and reported. */
export class BootGenerations {
  own: number;
  partner: PartnerGenerations;
  private behindAlarm?: string;
  private ignoredAlarm?: string;
  /** The partner the record follows now (the profile's, or one adopted since); its key is derived from it. */
  private partnerName?: string;

  /** `profilePartner`: the profile's partner (its record is kept under its name); absent, the single record of old. */
  constructor(private readonly store: Store, private readonly log: Logger, private readonly profilePartner?: string) {
    this.partnerName = profilePartner;
    this.partner = profilePartner ? loadPartnerGenerationsOf(store, profilePartner, true) : loadPartnerGenerations(store);
    this.own = store.nextGeneration();
  }

  /** Follows the membership process: persists what it learns, takes a newer generation when behind. */
  attach(m: GenerationSource): void {
    m.on('generations', (g) => {
      this.partner = g;
      savePartnerGenerations(this.store, g, partnerGenerationsKey(this.partnerName), this.partnerName);
      // The single record an earlier firmware reads after a rollback (its profile's partner): the
      // profile's partner's, named; never an adopted partner's, which it would take for the profile's.
      if (this.partnerName && this.partnerName === this.profilePartner) savePartnerGenerations(this.store, g, PARTNER_KEY, this.partnerName);
    });
    m.on('generation-behind', (echo) => {
      const from = this.own;
      this.own = this.store.nextGeneration(echo + 1);
      m.setGeneration(this.own);
      const msg = `boot generation ${from} is behind the partner's record of this board (${echo}): this board's store lost or rolled back its generation; now generation ${this.own}`;
      this.store.record('generation', msg, { from, to: this.own, echo });
      this.log.error({ from, to: this.own, echo }, msg);
      this.behindAlarm = `boot generation went back (the partner had heard ${echo}, the store had ${from}): check this board's storage`;
    });
    m.on('partner-ignored', (hb, reason) => {
      const msg = `partner ${hb.sender} heard but IGNORED: ${IGNORED_WHY[reason](hb, this.partner)}`;
      this.store.record('partner', msg, { reason, heartbeat: { ...hb } });
      this.log.error({ reason, sender: hb.sender, generation: hb.generation }, msg);
      this.ignoredAlarm = `partner heard but ignored (${reason}, generation ${hb.generation}): the pair is not protected`;
    });
    m.on('partner-alive', () => { this.ignoredAlarm = undefined; });
  }

  /** Another board is the partner now (adopted at run time): what this board knows of that board's boots. */
  usePartner(adopted: string): PartnerGenerations {
    this.partnerName = adopted;
    this.partner = loadPartnerGenerationsOf(this.store, adopted, adopted === this.profilePartner);
    this.ignoredAlarm = undefined;
    return this.partner;
  }

  get alarms(): string[] {
    return [this.behindAlarm, this.ignoredAlarm].filter((a): a is string => !!a);
  }
}

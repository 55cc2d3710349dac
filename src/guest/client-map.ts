/**
 * Maps each external client (address:port) to a port on the private wire, so the guest sees one
 * stable identity per client (its reply cache is keyed by it) while only ever talking to the
 * controller.
 *
 * An identity is never handed to another client while the guest may still hold cached replies for
 * it: the map mirrors the guest's reply cache (PROTOCOL.md §4: 4096 entries keyed by client and id,
 * first-in first-out, one entry per request with a valid id that is not already cached) from the
 * same input stream, with a margin of extra entries, so an identity leaves the mirror only after the
 * guest's cache has turned over past it even if the guest lost up to `cacheMargin` inputs on the
 * way. A port is held while the mirror has an entry for it, or from its assignment until its first
 * request reaches the stream; then it is forgotten and goes back to the free ports (a client that
 * comes back later is new to the guest as well: its cached replies are gone). New clients get a
 * never-used port first, then the free port released longest ago; when every port is held, a new
 * client is refused (the caller drops its datagram, counted) rather than given a held identity.
 *
 * Deterministic: a replica fed the same inputs (`assign` + `noteRequest` in stream order) builds
 * the same map. Owns no socket.
 */
import { requestId } from '../core/request-id.js';

/** The request id the guest reads from a datagram (src/core/request-id.ts). */
export { requestId };

export const CLIENT_PORT_FIRST = 20000;
export const CLIENT_PORT_LAST = 59999;
/** The reference guest's reply cache (guests/dx-legacy/PROTOCOL.md §4). */
export const GUEST_REPLY_CACHE_ENTRIES = 4096;
export const CLIENT_CACHE_MARGIN = 1024;

export interface ClientAddress {
  address: string;
  port: number;
}

export interface ClientMapOptions {
  /** First and last port of the private wire's client range. */
  first?: number;
  last?: number;
  /** Entries of the guest's reply cache. Default 4096 (the reference guest). */
  cacheEntries?: number;
  /** Extra entries kept in the mirror: inputs the guest may lose without the mirror forgetting too early. Default 1024. */
  cacheMargin?: number;
}

/** What a replica needs to rebuild an identical map. */
export interface ClientMapState {
  entries: Array<[number, string, number]>;
  next: number;
  /** The mirror of the guest's reply cache, oldest first: "<port> <id>". */
  cache?: string[];
  /** Ports assigned whose first request has not reached the stream yet. */
  fresh?: number[];
}

export class ClientMap {
  private byKey = new Map<string, number>();
  private byPort = new Map<number, ClientAddress>();
  /** The lowest port never assigned (last + 1 once all were). */
  private next: number;
  /** Ports assigned and forgotten again, released longest ago first (a Set keeps insertion order). */
  private free = new Set<number>();
  private fresh = new Set<number>();
  private readonly capacity: number;
  private ring: string[] = [];
  private ringHead = 0;
  private cached = new Set<string>();
  private perPort = new Map<number, number>();
  /** New clients refused because every port was held. */
  refused = 0;
  /** Ports given to a new client after their previous identity left the guest's cache. */
  reused = 0;
  private readonly first: number;
  private readonly last: number;

  constructor(o: ClientMapOptions | number = {}, last?: number) {
    const opts: ClientMapOptions = typeof o === 'number' ? { first: o, last } : o;
    this.first = opts.first ?? CLIENT_PORT_FIRST;
    this.last = opts.last ?? CLIENT_PORT_LAST;
    this.capacity = (opts.cacheEntries ?? GUEST_REPLY_CACHE_ENTRIES) + (opts.cacheMargin ?? CLIENT_CACHE_MARGIN);
    this.next = this.first;
  }

  /** Clients with an identity now. */
  get size(): number {
    return this.byKey.size;
  }

  /** Entries of the reply-cache mirror (at most cacheEntries + cacheMargin). */
  get cachedEntries(): number {
    return this.cached.size;
  }

  /** The client's port; a new client gets a free one, or undefined (refused) when every port is held. */
  portFor(client: ClientAddress): number | undefined {
    const known = this.byKey.get(`${client.address}:${client.port}`);
    if (known !== undefined) return known;
    let port: number;
    if (this.next <= this.last) {
      port = this.next;
    } else {
      const oldest = this.free.values().next();
      if (oldest.done) { this.refused++; return undefined; }
      port = oldest.value;
      this.reused++;
    }
    this.assign(port, client);
    return port;
  }

  clientOf(port: number): ClientAddress | undefined {
    return this.byPort.get(port);
  }

  /** Mirrors an assignment made by the primary's map (a backup replays the primary's choices). */
  assign(port: number, client: ClientAddress): void {
    const key = `${client.address}:${client.port}`;
    if (this.byKey.get(key) === port) return;
    const old = this.byPort.get(port);
    if (old) this.byKey.delete(`${old.address}:${old.port}`);
    const prev = this.byKey.get(key);
    if (prev !== undefined) this.forget(prev);
    this.byKey.set(key, port);
    this.byPort.set(port, { address: client.address, port: client.port });
    this.free.delete(port);
    if (!this.perPort.get(port)) this.fresh.add(port);
    if (port >= this.next) {
      for (let p = this.next; p < port; p++) this.free.add(p); // skipped by another map's choices (not by this one's)
      this.next = port + 1;
    }
  }

  /**
   * One request on the stream from this port, in stream order (both copies): what the guest's reply
   * cache does with it, mirrored. Called for every request sequenced (primary) or received (backup).
   */
  noteRequest(port: number, payload: Buffer): void {
    this.fresh.delete(port);
    const id = requestId(payload);
    if (id !== undefined) {
      const k = `${port} ${id}`;
      if (!this.cached.has(k)) this.insert(k, port);
    }
    if (!this.perPort.get(port) && this.byPort.has(port)) this.forget(port);
  }

  private insert(k: string, port: number): void {
    this.cached.add(k);
    this.perPort.set(port, (this.perPort.get(port) ?? 0) + 1);
    if (this.ring.length < this.capacity) { this.ring.push(k); return; }
    const evicted = this.ring[this.ringHead]!;
    this.ring[this.ringHead] = k;
    this.ringHead = (this.ringHead + 1) % this.capacity;
    this.cached.delete(evicted);
    const ep = Number(evicted.slice(0, evicted.indexOf(' ')));
    const left = (this.perPort.get(ep) ?? 1) - 1;
    if (left > 0) { this.perPort.set(ep, left); return; }
    this.perPort.delete(ep);
    if (!this.fresh.has(ep)) this.forget(ep);
  }

  /** The identity holds nothing in the guest any more: the client is forgotten and its port freed. */
  private forget(port: number): void {
    const c = this.byPort.get(port);
    if (c) this.byKey.delete(`${c.address}:${c.port}`);
    this.byPort.delete(port);
    this.fresh.delete(port);
    if (!this.perPort.get(port) && port >= this.first && port < this.next) this.free.add(port);
  }

  /** The cache mirror, oldest first. */
  private cacheInOrder(): string[] {
    return [...this.ring.slice(this.ringHead), ...this.ring.slice(0, this.ringHead)];
  }

  /** Every assignment and the cache mirror: enough to rebuild an identical map. */
  export(): ClientMapState {
    return { entries: [...this.byPort].map(([p, c]) => [p, c.address, c.port]), next: this.next, cache: this.cacheInOrder(), fresh: [...this.fresh] };
  }

  /**
   * Rebuilds the map from a replica's export. A state without a cache mirror (an older controller)
   * holds every port it names as fresh until its next request.
   */
  import(state: ClientMapState): void {
    this.byKey.clear();
    this.byPort.clear();
    this.free.clear();
    this.fresh.clear();
    this.cached.clear();
    this.perPort.clear();
    this.ring = [];
    this.ringHead = 0;
    // An older export's next wrapped around: every port may have been used.
    this.next = state.cache ? Math.min(Math.max(state.next, this.first), this.last + 1) : this.last + 1;
    for (const k of (state.cache ?? []).slice(-this.capacity)) {
      if (this.cached.has(k)) continue;
      const port = Number(k.slice(0, k.indexOf(' ')));
      this.cached.add(k);
      this.ring.push(k);
      this.perPort.set(port, (this.perPort.get(port) ?? 0) + 1);
    }
    for (const [p, a, cp] of state.entries) {
      this.byKey.set(`${a}:${cp}`, p);
      this.byPort.set(p, { address: a, port: cp });
      if (!this.perPort.get(p)) this.fresh.add(p);
    }
    for (const p of state.fresh ?? []) if (this.byPort.has(p)) this.fresh.add(p);
    for (let p = this.first; p < this.next; p++) if (!this.byPort.has(p) && !this.perPort.get(p)) this.free.add(p);
  }
}

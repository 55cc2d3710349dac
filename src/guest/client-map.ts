/**
 * Maps each external client (address:port) to a port on the private wire, so the guest sees one
 * stable identity per client (its reply cache is keyed by it) while only ever talking to the
 * controller. Ports are handed out in order and reused oldest-first when all are taken, which is
 * deterministic: a replica fed the same inputs builds the same map.
 */

export const CLIENT_PORT_FIRST = 20000;
export const CLIENT_PORT_LAST = 59999;

export interface ClientAddress {
  address: string;
  port: number;
}

export class ClientMap {
  private byKey = new Map<string, number>();
  private byPort = new Map<number, ClientAddress>();
  private next: number;

  constructor(private readonly first = CLIENT_PORT_FIRST, private readonly last = CLIENT_PORT_LAST) {
    this.next = first;
  }

  get size(): number {
    return this.byKey.size;
  }

  portFor(client: ClientAddress): number {
    const key = `${client.address}:${client.port}`;
    const known = this.byKey.get(key);
    if (known !== undefined) return known;
    const port = this.next;
    this.next = port === this.last ? this.first : port + 1;
    const evicted = this.byPort.get(port);
    if (evicted) this.byKey.delete(`${evicted.address}:${evicted.port}`);
    this.byKey.set(key, port);
    this.byPort.set(port, { address: client.address, port: client.port });
    return port;
  }

  clientOf(port: number): ClientAddress | undefined {
    return this.byPort.get(port);
  }

  /** Mirrors an assignment made by the primary's map (a backup replays the primary's choices). */
  assign(port: number, client: ClientAddress): void {
    const old = this.byPort.get(port);
    if (old) this.byKey.delete(`${old.address}:${old.port}`);
    const key = `${client.address}:${client.port}`;
    const prev = this.byKey.get(key);
    if (prev !== undefined && prev !== port) this.byPort.delete(prev);
    this.byKey.set(key, port);
    this.byPort.set(port, { address: client.address, port: client.port });
    this.next = port === this.last ? this.first : port + 1;
  }

  /** Every assignment, oldest first, and where the next one goes: enough to rebuild an identical map. */
  export(): { entries: Array<[number, string, number]>; next: number } {
    return { entries: [...this.byPort].map(([p, c]) => [p, c.address, c.port]), next: this.next };
  }

  import(state: { entries: Array<[number, string, number]>; next: number }): void {
    this.byKey.clear();
    this.byPort.clear();
    for (const [p, a, cp] of state.entries) {
      this.byKey.set(`${a}:${cp}`, p);
      this.byPort.set(p, { address: a, port: cp });
    }
    this.next = state.next;
  }
}

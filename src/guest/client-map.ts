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
}

/**
 * The metrics HTTP endpoint: GET /metrics on a loopback address, nothing else. Owns the HTTP server
 * only; what it serves comes from a `scrape` callback. Kept apart from metrics.ts so the daemon can
 * listen without loading prom-client: the registry is built at the first scrape (an idle board that
 * nobody scrapes never loads it).
 */
import { createServer, type Server } from 'node:http';
import { isIP } from 'node:net';
import { UsError } from '../core/errors.js';

export interface MetricsBody {
  contentType: string;
  body: string;
}

export interface MetricsEndpoint {
  port: number;
  close(): Promise<void>;
}

/**
 * Serves GET /metrics on a loopback address (127.0.0.0/8, ::1 or localhost); port 0 picks one.
 * Everything else gets 404 (405 for other methods on /metrics).
 */
export async function serveMetrics(address: string, port: number, scrape: () => Promise<MetricsBody>): Promise<MetricsEndpoint> {
  const loopback = address === 'localhost' || address === '::1' || (isIP(address) === 4 && address.startsWith('127.'));
  if (!loopback) throw new UsError('US_ERR_CONFIG', `metrics: ${address} is not a loopback address; the endpoint serves this machine only`);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsError('US_ERR_CONFIG', `metrics: port ${port} out of range`);
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: the metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    scrape().then(
      (m) => res.writeHead(200, { 'content-type': m.contentType }).end(req.method === 'HEAD' ? undefined : m.body),
      (e: Error) => res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`${e.message}\n`),
    );
  });
  server.maxConnections = 16;
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(e.code === 'EADDRINUSE'
      ? new UsError('US_ERR_ADDRESS_IN_USE', `metrics endpoint ${address}:${port}: address already in use`)
      : new UsError('US_ERR_CONFIG', `metrics endpoint ${address}:${port}: ${e.message}`)));
    server.listen(port, address, () => resolve());
  });
  server.on('error', () => undefined);
  const bound = server.address();
  return {
    port: typeof bound === 'object' && bound ? bound.port : port,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

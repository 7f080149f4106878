// A pass-through HTTP proxy that can SIGKILL the process it serves at an
// exact request: the crash tests put it between `landfall serve` and a real
// server (MinIO, the Iceberg REST catalog) and decide, per request, whether
// to forward it or to kill the node the moment it arrives (the upstream never
// sees it). Nothing in the node knows: no test hook in production code.
//
// Requests are forwarded byte for byte with their Host header, so SigV4
// signatures (made for the proxy's address) still verify at MinIO.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type ProxyAction = 'pass' | 'kill';

export interface KillProxyOptions {
  /** `http://host:port` of the real server. */
  readonly upstream: string;
  /** Called for every request before anything is forwarded. */
  readonly decide: (req: http.IncomingMessage) => ProxyAction;
  /** Runs synchronously when `decide` says kill, before the request is dropped. */
  readonly kill: (req: http.IncomingMessage) => void;
  /** Every upstream answer's status, as soon as its headers are in (before the client sees them). */
  readonly onAnswer?: (req: http.IncomingMessage, status: number) => void;
}

export interface KillProxy {
  readonly url: string;
  close(): Promise<void>;
}

// Hop-by-hop: the proxy's two connections each have their own.
const hopByHop = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade']);

export async function startKillProxy(o: KillProxyOptions): Promise<KillProxy> {
  const up = new URL(o.upstream);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const server = http.createServer((req, res) => {
    if (o.decide(req) === 'kill') {
      o.kill(req);
      req.socket.destroy();
      return;
    }
    const headers: http.OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(req.headers)) if (!hopByHop.has(k) && v !== undefined) headers[k] = v;
    const fwd = http.request(
      {
        host: up.hostname,
        port: up.port,
        method: req.method,
        path: req.url,
        headers,
        agent,
      },
      (answer) => {
        o.onAnswer?.(req, answer.statusCode ?? 0);
        const out: http.OutgoingHttpHeaders = {};
        for (const [k, v] of Object.entries(answer.headers))
          if (!hopByHop.has(k) && v !== undefined) out[k] = v;
        res.writeHead(answer.statusCode ?? 502, answer.statusMessage, out);
        answer.pipe(res);
        answer.on('error', () => res.destroy());
      },
    );
    fwd.on('error', () => res.destroy());
    req.on('error', () => fwd.destroy());
    // A client gone (killed) mid-request: drop the upstream half too.
    res.on('close', () => {
      if (!res.writableFinished) fwd.destroy();
    });
    req.pipe(fwd);
  });
  // A killed client leaves half-open sockets behind: never an unhandled error.
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      agent.destroy();
    },
  };
}

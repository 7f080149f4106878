// Measures zstd levels on NDJSON-like events, to choose compress.ts's level.
//   npm run bench:zstd -- [MiB=64]
// Prints MB/s (of input) and ratio per level. Data: ndjsonSample() below,
// events with the repetition and the entropy of real page-view/order logs
// (shared field names, enum-ish values, random ids and timestamps).
import { Readable, Writable } from 'node:stream';
import { zstdCompressStream } from './compress.ts';

/** Deterministic pseudo-random NDJSON of about `bytes` bytes (xorshift, no Math.random). */
export function ndjsonSample(bytes: number, seed = 42): Buffer {
  let s = seed >>> 0 || 1;
  const rnd = (): number => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x1_0000_0000;
  };
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const events = ['page_view', 'click', 'add_to_cart', 'checkout', 'purchase', 'search'];
  const paths = ['/', '/products', '/products/{id}', '/cart', '/checkout', '/search', '/account'];
  const agents = [
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36',
    'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148',
    'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0',
  ];
  const countries = ['US', 'DE', 'FR', 'GB', 'JP', 'BR', 'IN', 'CA'];
  const hex = (n: number): string => {
    let out = '';
    for (let i = 0; i < n; i++) out += Math.floor(rnd() * 16).toString(16);
    return out;
  };
  const lines: string[] = [];
  let total = 0;
  let ts = Date.UTC(2025, 10, 26, 5, 0, 0);
  while (total < bytes) {
    ts += Math.floor(rnd() * 50);
    const event = pick(events);
    const line = JSON.stringify({
      event,
      ts: new Date(ts).toISOString(),
      user: `u${Math.floor(rnd() * 100_000)}`,
      session: hex(16),
      path: pick(paths).replace('{id}', String(Math.floor(rnd() * 5000))),
      country: pick(countries),
      ua: pick(agents),
      ...(event === 'purchase' ? { amount: Math.round(rnd() * 50_000) / 100, currency: 'USD' } : {}),
      latency_ms: Math.floor(rnd() * 800),
    });
    lines.push(line);
    total += line.length + 1;
  }
  return Buffer.from(`${lines.join('\n')}\n`);
}

/** More repetitive NDJSON: structured app logs, skewed services/messages/ids. */
export function logSample(bytes: number, seed = 7): Buffer {
  let s = seed >>> 0 || 1;
  const rnd = (): number => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x1_0000_0000;
  };
  const msgs = [
    'request completed',
    'cache miss',
    'db query slow',
    'user login',
    'payment authorized',
    'retrying',
  ];
  const services = ['api', 'auth', 'billing', 'search'];
  const lines: string[] = [];
  let total = 0;
  let ts = Date.UTC(2025, 10, 26);
  while (total < bytes) {
    ts += Math.floor(rnd() * 20);
    const line = JSON.stringify({
      level: rnd() < 0.9 ? 'info' : 'warn',
      ts: new Date(ts).toISOString(),
      service: services[Math.floor(rnd() ** 2 * services.length)],
      msg: msgs[Math.floor(rnd() ** 2 * msgs.length)],
      user_id: Math.floor(1000 * rnd() ** 3),
      status: rnd() < 0.95 ? 200 : 500,
      duration_ms: Math.floor(rnd() * 300),
      path: `/v1/items/${Math.floor(rnd() ** 4 * 200)}`,
    });
    lines.push(line);
    total += line.length + 1;
  }
  return Buffer.from(`${lines.join('\n')}\n`);
}

if (import.meta.main) {
  const mib = Number(process.argv[2] ?? 64);
  for (const [name, data] of [
    ['events', ndjsonSample(mib * 1024 * 1024)],
    ['logs', logSample(mib * 1024 * 1024)],
  ] as const) {
    console.log(`${name}: ${(data.length / 1e6).toFixed(1)} MB of NDJSON`);
    await benchLevels(data);
  }
}

async function benchLevels(data: Buffer): Promise<void> {
  for (const level of [1, 2, 3, 4, 6, 9, 12]) {
    let out = 0;
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        out += chunk.length;
        cb();
      },
    });
    const t0 = performance.now();
    await zstdCompressStream(Readable.from([data]), sink, { level, inputBytes: data.length });
    const s = (performance.now() - t0) / 1000;
    console.log(
      `level ${String(level).padStart(2)}: ${(data.length / 1e6 / s).toFixed(0).padStart(4)} MB/s, ratio ${(data.length / out).toFixed(2)}, ${(out / 1e6).toFixed(2)} MB`,
    );
  }
}

// The two request shapes of the ingest benchmark, built deterministically so
// the load generator (a child process) and the report agree on their sizes.

export type Shape = '1k' | '64k';

export interface Body {
  readonly shape: Shape;
  readonly label: string;
  readonly body: string;
  readonly bytes: number;
  readonly events: number;
}

function event(i: number, bytes: number): string {
  const head = `{"event":"page_view","user":"u${i % 9973}","ts":"2026-01-01T00:00:${String(i % 60).padStart(2, '0')}Z","seq":${i},"pad":"`;
  const tail = '"}\n';
  return head + 'x'.repeat(Math.max(0, bytes - head.length - tail.length)) + tail;
}

/** 1k: one event line of exactly 1024 bytes. 64k: 100 event lines, 65536 bytes in all. */
export function buildBody(shape: Shape): Body {
  if (shape === '1k') {
    const body = event(1, 1024);
    return { shape, label: '1 KiB, 1 event', body, bytes: Buffer.byteLength(body), events: 1 };
  }
  const events = 100;
  const lines: string[] = [];
  let left = 65_536;
  for (let i = 0; i < events; i++) {
    const size = Math.floor(left / (events - i));
    lines.push(event(i, size));
    left -= size;
  }
  const body = lines.join('');
  return { shape, label: '64 KiB, 100 events', body, bytes: Buffer.byteLength(body), events };
}

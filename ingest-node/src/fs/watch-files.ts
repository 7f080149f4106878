// Watching a few files that are replaced while the node runs (API keys, TLS
// certificates): mounted Secrets, cert-manager renewals, an operator editing a
// file. Both readers need the same three things, so they live here once:
//   - a watch on each file *and* on its directory: an atomic replace (rename
//     over the file, the kubelet's `..data` symlink swap) leaves a watch on the
//     old inode deaf;
//   - one reload per burst of events (editors and the kubelet make several);
//   - a periodic check, because watches can miss events (network filesystems,
//     a directory that did not exist yet) or fail to start.
import { watch } from 'node:fs';
import type { FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from '../log.ts';

export interface WatchFilesOptions {
  readonly paths: readonly string[];
  /** Called once per burst of changes (debounced). */
  readonly onChange: () => void;
  /** Called every `checkIntervalMs`; calls `changed` when it sees a change the watches missed. */
  readonly check: (changed: () => void) => void;
  readonly checkIntervalMs: number;
  readonly log: Logger;
  /** For the log line when a watch cannot start, e.g. "the TLS files". */
  readonly what: string;
  readonly debounceMs?: number;
}

export interface FileWatch {
  close(): void;
}

export function watchFiles(o: WatchFilesOptions): FileWatch {
  const watchers: FSWatcher[] = [];
  let debounce: NodeJS.Timeout | undefined;
  let closed = false;
  const changed = (): void => {
    if (closed) return;
    clearTimeout(debounce);
    debounce = setTimeout(o.onChange, o.debounceMs ?? 50);
    debounce.unref();
  };
  const names = new Set(o.paths.map((p) => basename(p)));
  const targets: Array<[string, (file: string | null) => boolean]> = [
    ...o.paths.map((p): [string, () => boolean] => [p, () => true]),
    ...[...new Set(o.paths.map((p) => dirname(p)))].map((d): [string, (file: string | null) => boolean] => [
      d,
      (file) => file === null || names.has(file) || file.startsWith('..'),
    ]),
  ];
  for (const [target, relevant] of targets) {
    try {
      const w = watch(target, { persistent: false }, (_event, file) => {
        if (relevant(file)) changed();
      });
      w.on('error', () => w.close());
      watchers.push(w);
    } catch (err) {
      o.log.warn({ err, path: target }, `cannot watch ${o.what}; relying on the periodic check`);
    }
  }
  const timer = setInterval(() => o.check(changed), o.checkIntervalMs);
  timer.unref();
  return {
    close(): void {
      closed = true;
      clearInterval(timer);
      clearTimeout(debounce);
      for (const w of watchers) w.close();
      watchers.length = 0;
    },
  };
}

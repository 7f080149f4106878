// The informer against a scripted fake API server: resume from the last
// event/bookmark, re-list on 410 with a diff, back off on errors, watchdog.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { Informer } from '../src/runtime/informer.ts';
import { KubeClient, Resources } from '../src/runtime/kube.ts';
import type { KubeObject } from '../src/runtime/kube.ts';
import { jsonLogger, silentLogger } from '../src/runtime/log.ts';

const cm = (name: string, rv: string): KubeObject => ({
  metadata: { name, namespace: 'ns', resourceVersion: rv },
});

type Script = (req: IncomingMessage, res: ServerResponse, url: URL) => void;

async function fakeApi(onList: Script, onWatch: Script) {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.searchParams.get('watch') === 'true') onWatch(req, res, url);
    else onList(req, res, url);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: 'fake',
        server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        skipTLSVerify: true,
      },
    ],
    users: [{ name: 'u' }],
    contexts: [{ name: 'c', cluster: 'fake', user: 'u' }],
    currentContext: 'c',
  });
  return {
    kc,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

const send = (res: ServerResponse, type: string, object: unknown): void => {
  res.write(JSON.stringify({ type, object }) + '\n');
};

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

void test('resumes from bookmarks, re-lists on 410 (diffing), backs off on errors', async () => {
  const lists: string[] = [];
  const watches: string[] = [];
  let listN = 0;
  let watchN = 0;
  const api = await fakeApi(
    (_req, res) => {
      listN++;
      lists.push(String(listN));
      const body =
        listN === 1
          ? { items: [cm('a', '5'), cm('b', '6')], metadata: { resourceVersion: '10' } }
          : { items: [cm('a', '11')], metadata: { resourceVersion: '20' } };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    },
    (_req, res, url) => {
      watchN++;
      watches.push(
        `${url.searchParams.get('resourceVersion')}|${url.searchParams.get('allowWatchBookmarks')}|${url.searchParams.get('timeoutSeconds') ? 't' : '-'}`,
      );
      if (watchN === 3) {
        res.writeHead(500).end('{"message":"etcd is sad"}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      if (watchN === 1) {
        send(res, 'MODIFIED', cm('a', '11'));
        send(res, 'BOOKMARK', { metadata: { resourceVersion: '15' } });
        res.end();
      } else if (watchN === 2) {
        send(res, 'ERROR', {
          kind: 'Status',
          code: 410,
          reason: 'Expired',
          message: 'too old resource version',
        });
      } else if (watchN === 4) {
        send(res, 'ADDED', cm('c', '21'));
      }
    },
  );
  const events: string[] = [];
  const inf = new Informer<KubeObject>({
    client: new KubeClient(api.kc),
    resource: Resources.configMap,
    log: silentLogger,
    backoffBaseMs: 20,
    resyncPeriodMs: 0,
  });
  inf.on('add', (o) => events.push(`add ${o.metadata?.name ?? ''}@${o.metadata?.resourceVersion ?? ''}`));
  inf.on('update', (o, old) =>
    events.push(
      `update ${o.metadata?.name ?? ''}@${old?.metadata?.resourceVersion ?? ''}→${o.metadata?.resourceVersion ?? ''}`,
    ),
  );
  inf.on('delete', (o) => events.push(`delete ${o.metadata?.name ?? ''}`));
  try {
    await inf.start();
    await until(() => events.includes('add c@21'), 'the event after the error');
    assert.deepEqual(events, ['add a@5', 'add b@6', 'update a@5→11', 'delete b', 'add c@21']);
    assert.deepEqual(
      watches,
      ['10|true|t', '15|true|t', '20|true|t', '20|true|t'],
      'resumed from the bookmark, not re-listed on 500',
    );
    assert.equal(lists.length, 2, 'one re-list, for the 410');
    assert.deepEqual(
      inf
        .list()
        .map((o) => o.metadata?.name)
        .sort(),
      ['a', 'c'],
    );
    assert.equal(inf.getByKey('ns/a')?.kind, 'ConfigMap', 'list items get apiVersion/kind like watch events');
  } finally {
    await inf.stop();
    api.close();
  }
});

void test('the watchdog re-lists a watch that went silent; resync hands every object out', async () => {
  let lists = 0;
  const api = await fakeApi(
    (_req, res) => {
      lists++;
      res.writeHead(200).end(JSON.stringify({ items: [cm('a', '1')], metadata: { resourceVersion: '1' } }));
    },
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }); // and never a byte more
    },
  );
  const resynced: string[] = [];
  const inf = new Informer<KubeObject>({
    client: new KubeClient(api.kc),
    resource: Resources.configMap,
    log: process.env.DEBUG_INFORMER ? jsonLogger('debug') : silentLogger,
    watchdogMs: 200,
    resyncPeriodMs: 50,
  });
  inf.on('resync', (o) => resynced.push(o.metadata?.name ?? ''));
  try {
    await inf.start();
    await until(() => lists >= 2, 'a watchdog re-list');
    await until(() => resynced.length >= 2, 'resyncs');
    assert.ok(resynced.every((n) => n === 'a'));
  } finally {
    await inf.stop();
    api.close();
  }
});

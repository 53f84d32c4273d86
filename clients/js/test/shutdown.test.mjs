// A hub's graceful shutdown under a connected JavaScript client (docs/scaling.md,
// "Shutting down"): on SIGTERM the hub answers 503 on /readyz while it still serves
// (FLUX_SHUTDOWN_DRAIN_SECONDS), then acknowledges what is in flight and closes with
// 1001; the client resumes on the next hub on its own: every publish acknowledged
// once, none applied twice, its cache equal to the hub's state.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { makeEvent } from '../flux-client.js';
import { SKIP, SKIP_SPARE, SpareHub, client, freePort, ms, restState, uniquePrefix, until } from './helpers.mjs';

test('a SIGTERM under a stream of publishes: 503 while draining, 1001, resumed on the next hub, nothing lost or doubled', { skip: SKIP_SPARE || SKIP }, async (t) => {
  const port = await freePort();
  const drain = { FLUX_SHUTDOWN_DRAIN_SECONDS: '2' };
  const first = new SpareHub(port, drain);
  const next = new SpareHub(port, drain);
  t.after(() => first.stop());
  t.after(() => next.stop());
  await first.start();
  const p = uniquePrefix();
  const c = client({ publishRetries: 20 }, first.url);
  t.after(() => c.close());
  await c.connect();
  const cache = c.cache({ prefixes: [p] });
  await cache.ready;
  const changes = [];
  c.on('state', (s) => changes.push(s));

  // Four lanes publish one event each to their own entities, one after another.
  let stopping = false;
  const acked = new Map(); // entity id -> its result
  const lane = async (k) => {
    for (let n = 0; !stopping; n += 1) {
      const id = `${p}${k}-${n}`;
      const result = await c.publish(makeEvent(id, { n }));
      assert.equal(result.ok, true, JSON.stringify(result));
      acked.set(id, result);
    }
  };
  const lanes = [0, 1, 2, 3].map(lane);
  await until(() => acked.size >= 50, 'publishes acknowledged');

  const exited = new Promise((resolve) => first.proc.once('exit', resolve));
  first.proc.kill('SIGTERM');
  // The drain: /readyz turns 503 at once; publishes are still acknowledged meanwhile.
  await until(async () => (await fetch(`${first.url}/readyz`)).status === 503, '503 from /readyz', ms(2000));
  const during = acked.size;
  await until(() => acked.size > during + 10, 'publishes served during the drain', ms(1500));
  assert.equal(await exited, 0);
  await until(() => c.state === 'reconnecting', 'reconnecting');
  assert.equal(changes.find((s) => s.state === 'reconnecting').code, 1001);

  await next.start(); // the next hub: same port, same store
  await until(() => c.state === 'open', 'resumed on the next hub', ms(10_000));
  const resumed = acked.size;
  await until(() => acked.size >= resumed + 50, 'publishes on the next hub');
  stopping = true;
  await Promise.all(lanes);

  const state = await restState(c, p);
  for (const id of acked.keys()) assert.equal(state[id]?.version, 1, `${id} applied once`);
  // In flight at the close, yet acknowledged before it: nothing is sent again as a duplicate.
  assert.deepEqual([...acked.values()].filter((r) => r.status === 'duplicate'), []);
  const same = (k) => {
    const held = k.toJSON();
    return Object.keys(held).length === Object.keys(state).length && Object.entries(state).every(([id, e]) => held[id]?.version === e.version && held[id].properties.n === e.properties.n);
  };
  await cache.waitUntil(same, ms(5000));
  assert.equal(cache.gaps, 0);
  assert.equal(cache.resets, 0);
});

// Leases in the JavaScript client, against a real hub (started by tests/test_js_client.py):
// an event's ttl, and the deleted frame that says the lease ran out.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { makeEvent } from '../flux-client.js';
import { SKIP, client, ms, uniquePrefix } from './helpers.mjs';

test('an entity published with a ttl expires with reason expired', { skip: SKIP }, async (t) => {
  const p = uniquePrefix();
  const c = client();
  t.after(() => c.close());
  await c.connect();
  const frames = [];
  const sub = c.subscribe({ prefixes: [p] }, { snapshot: true });
  t.after(() => sub.close());
  sub.on((frame) => frames.push(frame));
  await sub.ready;
  assert.deepEqual(makeEvent(`${p}agent`, { on: true }, { ttl: 0.2 }).ttl, 0.2);
  await c.publish(makeEvent(`${p}agent`, { on: true }, { ttl: 0.2 }));
  const deadline = Date.now() + ms(10000);
  while (!frames.some((f) => f.type === 'deleted') && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const deleted = frames.find((f) => f.type === 'deleted');
  assert.equal(deleted.id, `${p}agent`);
  assert.equal(deleted.reason, 'expired');
});

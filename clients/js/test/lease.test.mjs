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

test('the cache keeps each entity\'s expiresAt: a snapshot, a beat, no ttl, ttl 0', { skip: SKIP }, async (t) => {
  const p = uniquePrefix();
  const c = client();
  t.after(() => c.close());
  await c.connect();
  await c.publish(makeEvent(`${p}a`, { on: true }, { ttl: 30 }));
  await c.publish(makeEvent(`${p}plain`, { on: true }));
  const got = await c.get(`${p}a`); // REST
  assert.match(got.expiresAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const cache = c.cache({ prefixes: [p] });
  t.after(() => cache.close());
  await cache.ready;
  assert.equal(cache.get(`${p}a`).expiresAt, got.expiresAt); // from the snapshot
  assert.equal('expiresAt' in cache.get(`${p}plain`), false);
  await c.publish(makeEvent(`${p}a`, { on: true }, { ttl: 60 })); // a beat: set {}
  await cache.waitUntil((k) => k.get(`${p}a`).expiresAt > got.expiresAt, ms(10000));
  const beat = cache.get(`${p}a`).expiresAt;
  await c.publish(makeEvent(`${p}a`, { on: false })); // no ttl: as it was
  await cache.waitUntil((k) => k.get(`${p}a`).properties.on === false, ms(10000));
  assert.equal(cache.get(`${p}a`).expiresAt, beat);
  await c.publish(makeEvent(`${p}a`, { on: false }, { ttl: 0 })); // removed
  await cache.waitUntil((k) => !('expiresAt' in k.get(`${p}a`)), ms(10000));
  assert.equal(cache.gaps, 0);
});

// Value filters (`where`) in the JavaScript client, against a real hub (started by
// tests/test_js_client.py): subscriptions, the entity cache, listings.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isDeepStrictEqual } from 'node:util';

import { EntityCache, makeEvent } from '../flux-client.js';
import { SKIP, client, ms, uniquePrefix } from './helpers.mjs';

const WHERE = { status: 'open', load: { lt: 5 } };

async function open(t, options = {}) {
  const c = client(options);
  t.after(() => c.close());
  await c.connect();
  return c;
}

/** `{id: properties}` of what REST lists under `prefix` that matches `where`. */
async function restWhere(c, prefix, where) {
  const out = {};
  for (const e of await c.list({ prefix, where })) out[e.id] = e.properties;
  return out;
}

function propertiesOf(cache) {
  const out = {};
  for (const [id, e] of cache.entities) out[id] = e.properties;
  return out;
}

test('a where subscription hands out entries and lefts', { skip: SKIP }, async (t) => {
  const p = uniquePrefix();
  const c = await open(t);
  await c.publish([makeEvent(`${p}a`, { status: 'open', load: 1 }), makeEvent(`${p}b`, { status: 'done', load: 1 })]);
  const frames = [];
  const sub = c.subscribe({ prefixes: [p] }, { snapshot: true, where: WHERE });
  t.after(() => sub.close());
  sub.on((frame) => frames.push(frame));
  await sub.ready;
  assert.deepEqual(frames.filter((f) => f.type === 'snapshot').flatMap((f) => f.entities.map((e) => e.id)), [`${p}a`]);
  await c.publish(makeEvent(`${p}b`, { status: 'open' }));
  await c.publish(makeEvent(`${p}a`, { load: 9 }));
  const deadline = Date.now() + ms(5000);
  while (!frames.some((f) => f.type === 'left') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const entry = frames.find((f) => f.type === 'delta' && f.id === `${p}b`);
  assert.equal(entry.created, true);
  assert.equal(entry.entered, true);
  assert.deepEqual(entry.set, { status: 'open', load: 1 });
  const left = frames.find((f) => f.type === 'left');
  assert.equal(left.id, `${p}a`);
});

test('an EntityCache with a where equals the filtered REST listing', { skip: SKIP }, async (t) => {
  const p = uniquePrefix();
  const [reader, writer] = await Promise.all([open(t), open(t, { encoding: 'msgpack' })]);
  const cache = new EntityCache(reader, { prefixes: [p] }, { where: WHERE });
  t.after(() => cache.close());
  await cache.ready;
  for (let round = 0; round < 10; round++) {
    await writer.publish(
      Array.from({ length: 8 }, (_, i) => makeEvent(`${p}e${(i * 3 + round) % 11}`, i % 2 ? { status: ['open', 'done'][(i + round) % 2] } : { load: (i * round) % 9 })),
    );
  }
  const expected = await restWhere(reader, p, WHERE);
  await cache.waitUntil(() => isDeepStrictEqual(propertiesOf(cache), expected), ms(10_000));
  assert.deepEqual(propertiesOf(cache), expected);
  assert.ok(Object.keys(expected).length > 0);
  assert.equal(cache.gaps, 0);
  // listPage with a where: `limit` matches per page, then a next cursor.
  const page = await reader.listPage({ prefix: p, where: { status: 'open' }, limit: 1 });
  assert.ok(page.entities.every((e) => e.properties.status === 'open'));
});

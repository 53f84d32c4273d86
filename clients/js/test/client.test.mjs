// The JavaScript client against a real hub (started by tests/test_js_client.py).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { EntityCache, FluxClient, FluxError, hubUrls, makeEvent, msgpack, uuid7 } from '../flux-client.js';
import { HUB_URL, SKIP, SKIP_SPARE, SpareHub, WebSocket, client, freePort, ms, restState, uniquePrefix, until } from './helpers.mjs';

/** A client closed when the test ends. */
async function open(t, options = {}, url = HUB_URL) {
  const c = client(options, url);
  t.after(() => c.close());
  await c.connect();
  return c;
}

// ------------------------------------------------------------------------ no hub needed

test('msgpack round-trips JSON values', () => {
  const values = [
    null, true, false, 0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53) + 1,
    0.5, -1.25, 1e300, '', 'a', 'x'.repeat(31), 'x'.repeat(32), 'é'.repeat(200), 'y'.repeat(70_000),
    [], [1, [2, [3]]], Array.from({ length: 20 }, (_, i) => i), Array.from({ length: 70_000 }, () => 1),
    {}, { a: 1, b: { c: [null, 'd'] } }, Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
  ];
  for (const value of values) {
    assert.deepEqual(msgpack.decode(msgpack.encode(value)), value);
  }
  // As JSON.stringify: undefined members are left out; __proto__ is a plain key.
  assert.deepEqual(msgpack.decode(msgpack.encode({ a: undefined, b: 1 })), { b: 1 });
  const proto = msgpack.decode(msgpack.encode(JSON.parse('{"__proto__": {"polluted": 1}}')));
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.keys(proto), ['__proto__']);
  assert.throws(() => msgpack.encode({ x: NaN }), /NaN/);
  assert.throws(() => msgpack.decode(new Uint8Array([0x92, 0x01])), /truncated/);
});

test('uuid7 is a version-7 UUID, time-ordered', () => {
  const a = uuid7();
  assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(uuid7(), a);
});

test('hubUrls derives the REST base and the WebSocket URL from either', () => {
  assert.deepEqual(hubUrls('http://h:3000'), { httpUrl: 'http://h:3000', wsUrl: 'ws://h:3000/api/ws' });
  assert.deepEqual(hubUrls('https://h/flux/'), { httpUrl: 'https://h/flux', wsUrl: 'wss://h/flux/api/ws' });
  assert.deepEqual(hubUrls('ws://h:3000/api/ws'), { httpUrl: 'http://h:3000', wsUrl: 'ws://h:3000/api/ws' });
  assert.deepEqual(hubUrls('wss://h'), { httpUrl: 'https://h', wsUrl: 'wss://h/api/ws' });
  assert.throws(() => hubUrls('ftp://h'), /unsupported URL/);
});

test('connect gives up after connectTimeout when nothing listens', async () => {
  const port = await freePort();
  const c = new FluxClient(`http://127.0.0.1:${port}`, { WebSocket, connectTimeout: 400, reconnect: { initialDelay: 20 } });
  const states = [];
  c.on('state', (s) => states.push(s.state));
  await assert.rejects(c.connect(), (e) => e instanceof FluxError && e.code === 'timeout');
  assert.equal(c.state, 'closed');
  assert.ok(states.filter((s) => s === 'connecting').length >= 2, `retried: ${states}`);
});

// ------------------------------------------------------------------------ against the hub

for (const encoding of ['json', 'msgpack']) {
  test(`publish: acks, a resent eventId is a duplicate, if_version conflicts (${encoding})`, { skip: SKIP }, async (t) => {
    const c = await open(t, { encoding });
    const p = uniquePrefix();
    const first = await c.publish(makeEvent(`${p}task`, { state: 'open', n: -7, f: 0.25, deep: { a: ['é', null] } }));
    assert.equal(first.ok, true);
    assert.equal(first.status, 'ok');
    assert.equal(first.version, 1);
    assert.match(first.eventId, /^[0-9a-f-]{36}$/);
    assert.equal(typeof first.position, 'string');

    // The same eventId again (a retry after a lost ack): acknowledged, not applied.
    const again = await c.publish({ ...makeEvent(`${p}task`, { state: 'changed' }), eventId: first.eventId });
    assert.deepEqual(again, { ...first, status: 'duplicate' });

    // Compare-and-set: one claim wins, the other learns the current version.
    const [claim, late, invalid] = await c.publish([
      makeEvent(`${p}task`, { owner: 'w1' }, { ifVersion: 1 }),
      makeEvent(`${p}task`, { owner: 'w2' }, { ifVersion: 1 }),
      { stream: 's', payload: { entity_id: `${p}x`, properties: {} } },
    ]);
    assert.equal(claim.ok, true);
    assert.equal(claim.version, 2);
    assert.equal(late.ok, false);
    assert.equal(late.error.code, 'conflict');
    assert.equal(late.version, 2);
    assert.equal(invalid.error.code, 'invalid');
    await assert.rejects(
      c.update(`${p}new`, { a: 1 }, { ifVersion: 3 }),
      (e) => e instanceof FluxError && e.code === 'conflict' && e.details.version === 0,
    );

    const entity = await c.get(`${p}task`);
    assert.deepEqual(entity.properties, { state: 'open', n: -7, f: 0.25, deep: { a: ['é', null] }, owner: 'w1' });
    assert.equal(entity.version, 2);
  });

  test(`subscribe with a snapshot, then live deltas (${encoding})`, { skip: SKIP }, async (t) => {
    const c = await open(t, { encoding });
    const p = uniquePrefix();
    await c.publish([makeEvent(`${p}a`, { v: 1 }), makeEvent(`${p}b`, { v: 2 }), makeEvent('elsewhere/x', { v: 0 })]);

    const sub = c.subscribe({ prefixes: [p] }, { snapshot: true });
    const frames = [];
    const iterator = sub[Symbol.asyncIterator]();
    for (;;) {
      const { value } = await iterator.next();
      frames.push(value);
      if (value.type === 'synced') break;
    }
    const snapshot = frames.filter((f) => f.type === 'snapshot').flatMap((f) => f.entities);
    assert.deepEqual(snapshot.map((e) => [e.id, e.version, e.properties]), [
      [`${p}a`, 1, { v: 1 }],
      [`${p}b`, 1, { v: 2 }],
    ]);
    assert.equal(typeof sub.cursor, 'string');
    await sub.ready;

    await c.publish(makeEvent(`${p}a`, { v: 10, w: true }));
    const { value: delta } = await iterator.next();
    assert.equal(delta.type, 'delta');
    assert.equal(delta.id, `${p}a`);
    assert.equal(delta.base, 1);
    assert.equal(delta.version, 2);
    assert.deepEqual(delta.set, { v: 10, w: true });
    assert.equal(sub.cursor, delta.position);

    await c.delete(`${p}b`);
    const { value: deleted } = await iterator.next();
    assert.equal(deleted.type, 'deleted');
    assert.equal(deleted.id, `${p}b`);

    await iterator.return();
    assert.equal(sub.state, 'closed');
    assert.deepEqual(await iterator.next(), { value: undefined, done: true });
  });
}

test('a live subscription without a snapshot starts from the subscribed cursor', { skip: SKIP }, async (t) => {
  const c = await open(t);
  const p = uniquePrefix();
  await c.publish(makeEvent(`${p}old`, { v: 1 }));
  const sub = c.subscribe({ globs: [`${p}*`] });
  await sub.ready;
  assert.equal(typeof sub.cursor, 'string');
  const seen = [];
  sub.on((f) => seen.push(f));
  await c.publish(makeEvent(`${p}new`, { v: 2 }));
  await until(() => seen.length === 1, 'the delta');
  assert.equal(seen[0].id, `${p}new`);
  assert.equal(seen[0].created, true);
});

test('a refused subscription rejects ready and ends its iterator', { skip: SKIP }, async (t) => {
  const c = await open(t);
  const sub = c.subscribe({});
  await assert.rejects(sub.ready, (e) => e instanceof FluxError && e.code === 'bad_frame');
  await assert.rejects(sub[Symbol.asyncIterator]().next(), /bad_frame/);
});

test('REST helpers: get, list, listPage, history, delete', { skip: SKIP }, async (t) => {
  const c = await open(t);
  const p = uniquePrefix();
  assert.equal(await c.get(`${p}missing`), null);
  await c.update(`${p}a/b`, { step: 1 });
  await c.update(`${p}a/b`, { step: 2 });
  await c.update(`${p}c`, { step: 1 });
  assert.deepEqual((await c.get(`${p}a/b`)).properties, { step: 2 });
  assert.deepEqual((await c.list({ prefix: p })).map((e) => e.id), [`${p}a/b`, `${p}c`]);
  const page = await c.listPage({ prefix: p, limit: 1 });
  assert.deepEqual(page.entities.map((e) => e.id), [`${p}a/b`]);
  assert.equal(typeof page.next, 'string');
  const rest = await c.listPage({ prefix: p, limit: 1, cursor: page.next });
  assert.deepEqual(rest.entities.map((e) => e.id), [`${p}c`]);
  const history = await c.history(`${p}a/b`);
  assert.deepEqual(history.map((e) => e.payload.properties.step), [2, 1]);
  assert.equal((await c.history(`${p}a/b`, { limit: 1 })).length, 1);
  const deleted = await c.delete(`${p}a/b`);
  assert.equal(deleted.entity_id, `${p}a/b`);
  assert.equal(await c.get(`${p}a/b`), null);
  await assert.rejects(c.history(''), (e) => e instanceof FluxError && e.details.status === 400);
});

test('EntityCache equals the REST state after concurrent publishes', { skip: SKIP }, async (t) => {
  const p = uniquePrefix();
  const reader = await open(t);
  const writers = await Promise.all([open(t), open(t, { encoding: 'msgpack' }), open(t)]);
  // Some state before the cache starts (comes with the snapshot)…
  await writers[0].publish(Array.from({ length: 10 }, (_, i) => makeEvent(`${p}e${i}`, { seed: i })));
  const cache = new EntityCache(reader, { prefixes: [p] });
  t.after(() => cache.close());
  // …and much while its snapshot is read and after.
  await Promise.all(
    writers.map(async (w, k) => {
      for (let round = 0; round < 20; round++) {
        const events = Array.from({ length: 10 }, (_, i) => makeEvent(`${p}e${(i * 7 + round + k) % 25}`, { [`w${k}`]: round, i }));
        await w.publish(events);
        if (round % 7 === 3) await w.delete(`${p}e${(round + k) % 25}`);
      }
    }),
  );
  await cache.ready;
  const expected = await restState(reader, p);
  await cache.waitUntil((c) => JSON.stringify(sorted(c.toJSON())) === JSON.stringify(sorted(expected)), ms(10_000));
  assert.equal(cache.gaps, 0);
  assert.equal(cache.synced, true);
  assert.ok(cache.size > 10);
});

test('after a dropped connection the cache resumes from its cursor: nothing missed, nothing doubled', { skip: SKIP }, async (t) => {
  const p = uniquePrefix();
  const reader = await open(t);
  const writer = await open(t);
  await writer.publish(makeEvent(`${p}a`, { n: 0 }));
  const cache = reader.cache({ prefixes: [p] });
  await cache.ready;
  const states = [];
  reader.on('state', (s) => states.push(s.state));

  reader.reconnectNow(); // the connection goes; a new one resumes
  const published = writer.publish([
    makeEvent(`${p}a`, { n: 1 }),
    makeEvent(`${p}b`, { n: 1 }),
  ]);
  await published;
  await writer.delete(`${p}a`);
  const expected = await restState(writer, p);
  await cache.waitUntil((c) => JSON.stringify(sorted(c.toJSON())) === JSON.stringify(sorted(expected)), ms(5000));
  assert.deepEqual(states.slice(0, 2), ['reconnecting', 'open']);
  assert.equal(reader.stats.connects, 2);
  assert.equal(cache.resets, 0, 'resumed, not read again');
  assert.equal(cache.gaps, 0);
});

test('reset: a cursor the delta log no longer holds makes the hub reset, and the cache reads the snapshot again', { skip: SKIP }, async (t) => {
  const p = uniquePrefix();
  const reader = await open(t);
  const writer = await open(t);
  await writer.publish([makeEvent(`${p}keep`, { n: 0 }), makeEvent(`${p}gone`, { n: 0 })]);
  const cache = reader.cache({ prefixes: [p] });
  await cache.ready;
  const changes = [];
  cache.onChange((c) => changes.push(c.type));

  cache.subscription.cursor = '1-0'; // long trimmed (never there, for this store)
  reader.reconnectNow();
  await writer.delete(`${p}gone`);
  await writer.publish(makeEvent(`${p}keep`, { n: 1 }));
  await writer.publish(makeEvent(`${p}new`, { n: 1 }));
  const expected = await restState(writer, p);
  await cache.waitUntil((c) => c.resets === 1 && c.synced && JSON.stringify(sorted(c.toJSON())) === JSON.stringify(sorted(expected)), ms(5000));
  assert.ok(changes.includes('reset'));
  assert.equal(cache.has(`${p}gone`), false);
  assert.equal(cache.gaps, 0);
});

test('publishes made while the hub is down are sent on reconnect and applied once', { skip: SKIP_SPARE || SKIP }, async (t) => {
  const spare = new SpareHub(await freePort());
  t.after(() => spare.stop());
  await spare.start();
  const p = uniquePrefix();
  const c = await open(t, {}, spare.url);
  const writer = await open(t); // on the test hub: same store, still up
  const cache = c.cache({ prefixes: [p] });
  await cache.ready;
  const changes = [];
  c.on('state', (s) => changes.push(s));

  await spare.stop(); // closes its WebSockets with 1001, then nothing listens
  await until(() => c.state === 'reconnecting', 'reconnecting');
  assert.equal(changes[0].code, 1001);
  await writer.publish([makeEvent(`${p}x`, { n: 1 }), makeEvent(`${p}y`, { n: 1 })]);
  const pending = c.publish(makeEvent(`${p}x`, { from: 'offline' }));
  await new Promise((r) => setTimeout(r, ms(300))); // a few refused attempts
  assert.equal(c.state, 'reconnecting');

  await spare.start(); // same port, same store
  const result = await pending;
  assert.equal(result.ok, true);
  assert.equal(result.version, 2);
  const expected = await restState(writer, p);
  await cache.waitUntil((k) => JSON.stringify(sorted(k.toJSON())) === JSON.stringify(sorted(expected)), ms(5000));
  assert.equal(cache.resets, 0);
  assert.equal(cache.gaps, 0);
  const states = changes.map((s) => s.state);
  assert.equal(states.at(-1), 'open');
  assert.ok(states.filter((s) => s === 'reconnecting').length >= 2, `backed off and retried: ${states}`);
  assert.equal((await writer.get(`${p}x`)).version, 2);
});

function sorted(object) {
  return Object.fromEntries(Object.entries(object).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, { version: v.version, properties: sortKeys(v.properties) }]));
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
  }
  return value;
}

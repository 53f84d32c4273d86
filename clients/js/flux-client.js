// @ts-check
/**
 * JavaScript client of the Flux hub: one ES module, no build step, no dependency.
 *
 * Runs in browsers and in Node (≥ 22 as is; Node 20 with the `ws` package passed as
 * the `WebSocket` option). It speaks the hub's native protocol (docs/protocol.md):
 *
 * - `publish` with per-event acknowledgements; every event gets an `eventId` before it
 *   is sent, so a resend after a lost connection is recognised by the hub and never
 *   applied twice; `if_version` for compare-and-set;
 * - `subscribe` returning a {@link Subscription} (an async iterator of frames, or
 *   listeners) that survives reconnects: it resumes from its cursor, and a `reset`
 *   from the hub (or a snapshot read again) tells consumers to drop what they hold;
 * - {@link EntityCache}: a live local replica of a filter's entities;
 * - `get`, `list`, `history`, `delete` over the REST API (`fetch`);
 * - automatic reconnect with exponential backoff and jitter.
 *
 * Encodings: JSON (`flux.v1`, the default) and MessagePack (`flux.v1.msgpack`, with
 * the small codec below: property values are JSON values, so maps, arrays, strings,
 * numbers, booleans and null are all it needs).
 *
 * See clients/js/README.md.
 *
 * @module flux-client
 */

export const JSON_PROTOCOL = 'flux.v1';
export const MSGPACK_PROTOCOL = 'flux.v1.msgpack';
/** Most events the hub takes in one publish frame (FLUX_MAX_EVENTS_PER_FRAME). */
export const MAX_EVENTS_PER_FRAME = 1000;

/**
 * @typedef {{all?: boolean, ids?: string[], prefixes?: string[], namespaces?: string[],
 *   globs?: string[]}} Filter
 *   The union of what is given (docs/protocol.md, `subscribe`).
 *
 * @typedef {{id: string, properties: Record<string, any>, version: number,
 *   lastUpdated: string, expiresAt?: string}} Entity
 *   `expiresAt`: when its lease runs out unless an event with a `ttl` renews it (RFC
 *   3339 UTC); absent when it has none (docs/presence.md).
 *
 * @typedef {{stream: string, source: string, payload: {entity_id: string,
 *   properties: Record<string, any>}, eventId?: string, if_version?: number,
 *   ttl?: number, timestamp?: number|string, key?: string, schema?: string}} FluxEvent
 *   A Flux envelope, as the REST API and the native `publish` take it.
 *
 * @typedef {{eventId: string, status?: 'ok'|'duplicate', version?: number,
 *   position?: string|null, error?: {code: string, message: string},
 *   retry_after_ms?: number, ok: boolean}} PublishResult
 *   The hub's result for one event, plus `ok` (no `error`).
 *
 * @typedef {'idle'|'connecting'|'open'|'reconnecting'|'closed'} ConnectionState
 *
 * @typedef {{state: ConnectionState, attempt: number, delay?: number, code?: number,
 *   reason?: string, error?: Error}} StateChange
 *
 * @typedef {{initialDelay?: number, maxDelay?: number, factor?: number}} BackoffOptions
 *   Reconnect delays in milliseconds: `initialDelay * factor^(attempt-1)`, at most
 *   `maxDelay`, then a random half of it taken off (jitter).
 *
 * @typedef {{token?: string|null, encoding?: 'json'|'msgpack', WebSocket?: any,
 *   fetch?: typeof fetch, reconnect?: BackoffOptions, connectTimeout?: number,
 *   openTimeout?: number, requestTimeout?: number, publishRetries?: number,
 *   source?: string, stream?: string}} ClientOptions
 */

/** An error of the client or a refusal by the hub. */
export class FluxError extends Error {
  /**
   * @param {string} code what went wrong: a hub error code (`conflict`, `bad_frame`,
   *   `unauthorized`, …), an HTTP-derived one (`not_found`, `http_500`), or the
   *   client's own (`timeout`, `closed`, `disconnected`, `protocol`).
   * @param {string} message
   * @param {Record<string, any>} [details] e.g. `status` (HTTP), `version`
   *   (conflict), `eventIds` (a publish whose outcome is unknown).
   */
  constructor(code, message, details = {}) {
    super(`${code}: ${message}`);
    this.name = 'FluxError';
    /** @type {string} */
    this.code = code;
    /** @type {Record<string, any>} */
    this.details = details;
  }
}

// ---------------------------------------------------------------------------- ids

/**
 * A UUIDv7 (time-ordered), from `crypto.getRandomValues` — which, unlike
 * `crypto.randomUUID`, browsers also offer on plain-http pages.
 * @returns {string}
 */
export function uuid7() {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = (b[6] & 0x0f) | 0x70; // version 7
  b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Build an event (a Flux envelope) for one entity.
 * @param {string} entityId
 * @param {Record<string, any>} properties
 * @param {{stream?: string, source?: string, eventId?: string, ifVersion?: number,
 *   ttl?: number}} [options] `ttl`: a lease in seconds (docs/presence.md); 0 removes one
 * @returns {FluxEvent}
 */
export function makeEvent(entityId, properties, options = {}) {
  /** @type {FluxEvent} */
  const event = {
    stream: options.stream ?? 'sdk',
    source: options.source ?? 'js-client',
    payload: { entity_id: entityId, properties },
  };
  if (options.eventId !== undefined) event.eventId = options.eventId;
  if (options.ifVersion !== undefined) event.if_version = options.ifVersion;
  if (options.ttl !== undefined) event.ttl = options.ttl;
  return event;
}

// ---------------------------------------------------------------------------- MessagePack

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

class Writer {
  constructor() {
    this.buf = new Uint8Array(512);
    this.view = new DataView(this.buf.buffer);
    this.pos = 0;
  }

  /** @param {number} n */
  ensure(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.buf.subarray(0, this.pos));
    this.buf = grown;
    this.view = new DataView(grown.buffer);
  }

  /** @param {number} tag @param {number} value @param {1|2|4} width */
  head(tag, value, width) {
    this.ensure(1 + width);
    this.buf[this.pos++] = tag;
    if (width === 1) this.view.setUint8(this.pos, value);
    else if (width === 2) this.view.setUint16(this.pos, value);
    else this.view.setUint32(this.pos, value);
    this.pos += width;
  }

  /** @param {number} byte */
  byte(byte) {
    this.ensure(1);
    this.buf[this.pos++] = byte;
  }

  /** @param {Uint8Array} bytes */
  bytes(bytes) {
    this.ensure(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
  }
}

/**
 * @param {Writer} w
 * @param {number} len
 * @param {number} fix the fix-format tag (0 if none)
 * @param {number} fixMax
 * @param {number[]} tags the 8-, 16- and 32-bit tags (8-bit: 0 if none)
 */
function writeLength(w, len, fix, fixMax, tags) {
  if (fix && len <= fixMax) w.byte(fix | len);
  else if (tags[0] && len < 0x100) w.head(tags[0], len, 1);
  else if (len < 0x10000) w.head(tags[1], len, 2);
  else w.head(tags[2], len, 4);
}

/** @param {Writer} w @param {any} v */
function writeValue(w, v) {
  if (v === null || v === undefined || typeof v === 'function' || typeof v === 'symbol') {
    w.byte(0xc0);
  } else if (v === false) {
    w.byte(0xc2);
  } else if (v === true) {
    w.byte(0xc3);
  } else if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new FluxError('invalid', 'NaN and infinity cannot be sent');
    if (Number.isSafeInteger(v) && !Object.is(v, -0)) writeInt(w, v);
    else {
      w.ensure(9);
      w.buf[w.pos++] = 0xcb;
      w.view.setFloat64(w.pos, v);
      w.pos += 8;
    }
  } else if (typeof v === 'bigint') {
    w.ensure(9);
    w.buf[w.pos++] = v < 0n ? 0xd3 : 0xcf;
    if (v < 0n) w.view.setBigInt64(w.pos, v);
    else w.view.setBigUint64(w.pos, v);
    w.pos += 8;
  } else if (typeof v === 'string') {
    const bytes = utf8Encoder.encode(v);
    writeLength(w, bytes.length, 0xa0, 31, [0xd9, 0xda, 0xdb]);
    w.bytes(bytes);
  } else if (Array.isArray(v)) {
    writeLength(w, v.length, 0x90, 15, [0, 0xdc, 0xdd]);
    for (const item of v) writeValue(w, item);
  } else if (v instanceof Uint8Array) {
    writeLength(w, v.length, 0, 0, [0xc4, 0xc5, 0xc6]);
    w.bytes(v);
  } else if (typeof v.toJSON === 'function') {
    writeValue(w, v.toJSON());
  } else {
    // As JSON.stringify: undefined and function members are left out.
    const keys = Object.keys(v).filter((k) => v[k] !== undefined && typeof v[k] !== 'function');
    writeLength(w, keys.length, 0x80, 15, [0, 0xde, 0xdf]);
    for (const k of keys) {
      writeValue(w, k);
      writeValue(w, v[k]);
    }
  }
}

/** @param {Writer} w @param {number} v a safe integer */
function writeInt(w, v) {
  if (v >= 0) {
    if (v < 0x80) w.byte(v);
    else if (v < 0x100) w.head(0xcc, v, 1);
    else if (v < 0x10000) w.head(0xcd, v, 2);
    else if (v < 0x100000000) w.head(0xce, v, 4);
    else writeValue(w, BigInt(v));
  } else if (v >= -32) {
    w.byte(v & 0xff);
  } else if (v >= -0x80) {
    w.ensure(2);
    w.buf[w.pos++] = 0xd0;
    w.view.setInt8(w.pos++, v);
  } else if (v >= -0x8000) {
    w.ensure(3);
    w.buf[w.pos++] = 0xd1;
    w.view.setInt16(w.pos, v);
    w.pos += 2;
  } else if (v >= -0x80000000) {
    w.ensure(5);
    w.buf[w.pos++] = 0xd2;
    w.view.setInt32(w.pos, v);
    w.pos += 4;
  } else {
    writeValue(w, BigInt(v));
  }
}

class Reader {
  /** @param {Uint8Array} buf */
  constructor(buf) {
    this.buf = buf;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = 0;
  }

  /** @param {number} n */
  need(n) {
    if (this.pos + n > this.buf.length) throw new FluxError('protocol', 'truncated MessagePack');
  }

  /** @param {1|2|4} width */
  uint(width) {
    this.need(width);
    const p = this.pos;
    this.pos += width;
    if (width === 1) return this.view.getUint8(p);
    if (width === 2) return this.view.getUint16(p);
    return this.view.getUint32(p);
  }

  /** @param {number} n */
  take(n) {
    this.need(n);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** @returns {any} */
  value() {
    const b = this.uint(1);
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if (b >= 0x80 && b <= 0x8f) return this.map(b & 0x0f);
    if (b >= 0x90 && b <= 0x9f) return this.array(b & 0x0f);
    if (b >= 0xa0 && b <= 0xbf) return utf8Decoder.decode(this.take(b & 0x1f));
    const v = this.view;
    let p = this.pos;
    switch (b) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.take(this.uint(1)).slice();
      case 0xc5:
        return this.take(this.uint(2)).slice();
      case 0xc6:
        return this.take(this.uint(4)).slice();
      case 0xca:
        this.need(4);
        this.pos += 4;
        return v.getFloat32(p);
      case 0xcb:
        this.need(8);
        this.pos += 8;
        return v.getFloat64(p);
      case 0xcc:
        return this.uint(1);
      case 0xcd:
        return this.uint(2);
      case 0xce:
        return this.uint(4);
      case 0xcf:
        // As JSON.parse: numbers beyond 2^53 lose precision.
        this.need(8);
        this.pos += 8;
        return Number(v.getBigUint64(p));
      case 0xd0:
        this.need(1);
        this.pos += 1;
        return v.getInt8(p);
      case 0xd1:
        this.need(2);
        this.pos += 2;
        return v.getInt16(p);
      case 0xd2:
        this.need(4);
        this.pos += 4;
        return v.getInt32(p);
      case 0xd3:
        this.need(8);
        this.pos += 8;
        return Number(v.getBigInt64(p));
      case 0xd9:
        return utf8Decoder.decode(this.take(this.uint(1)));
      case 0xda:
        return utf8Decoder.decode(this.take(this.uint(2)));
      case 0xdb:
        return utf8Decoder.decode(this.take(this.uint(4)));
      case 0xdc:
        return this.array(this.uint(2));
      case 0xdd:
        return this.array(this.uint(4));
      case 0xde:
        return this.map(this.uint(2));
      case 0xdf:
        return this.map(this.uint(4));
      default:
        // 0xc1 (never used), extension types: no frame of the protocol has them.
        p = this.pos - 1;
        throw new FluxError('protocol', `unsupported MessagePack type 0x${b.toString(16)} at ${p}`);
    }
  }

  /** @param {number} n */
  array(n) {
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.value();
    return out;
  }

  /** @param {number} n */
  map(n) {
    /** @type {Record<string, any>} */
    const out = {};
    for (let i = 0; i < n; i++) {
      const key = String(this.value());
      const value = this.value();
      // As JSON.parse: "__proto__" is an ordinary key, not the prototype.
      if (key === '__proto__') {
        Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      } else out[key] = value;
    }
    return out;
  }
}

/**
 * A minimal MessagePack codec for JSON-like values (what the protocol carries).
 * Numbers that are safe integers are sent as integers, others as float64; 64-bit
 * integers are read as numbers (like JSON.parse); extension types are refused.
 */
export const msgpack = {
  /**
   * @param {any} value
   * @returns {Uint8Array}
   */
  encode(value) {
    const w = new Writer();
    writeValue(w, value);
    return w.buf.slice(0, w.pos);
  },
  /**
   * @param {Uint8Array|ArrayBuffer} data
   * @returns {any}
   */
  decode(data) {
    const r = new Reader(data instanceof Uint8Array ? data : new Uint8Array(data));
    const value = r.value();
    if (r.pos !== r.buf.length) throw new FluxError('protocol', 'extra bytes after MessagePack value');
    return value;
  },
};

// ---------------------------------------------------------------------------- cursors

/** @param {string} position */
function partitionOf(position) {
  const colon = position.indexOf(':');
  return colon < 0 ? 0 : Number(position.slice(0, colon));
}

/**
 * A subscription's resume point: the last position seen in each partition
 * (docs/protocol.md, "Cursors and resume").
 */
class Cursor {
  constructor() {
    /** @type {Map<number, string>} */
    this.parts = new Map();
  }

  /** @param {string} text a cursor from `synced`, `checkpoint` or `subscribed` */
  set(text) {
    this.parts.clear();
    for (const part of text.split(',')) if (part) this.parts.set(partitionOf(part), part);
  }

  /** @param {string} position a (non-conflated) delta's position */
  advance(position) {
    this.parts.set(partitionOf(position), position);
  }

  clear() {
    this.parts.clear();
  }

  /** @returns {string|null} the cursor text, or null when none is known */
  text() {
    if (this.parts.size === 0) return null;
    return [...this.parts.keys()]
      .sort((a, b) => a - b)
      .map((p) => this.parts.get(p))
      .join(',');
  }
}

// ---------------------------------------------------------------------------- subscriptions

/**
 * @typedef {{type: 'snapshot', sub: string, entities: Entity[], done: boolean}} SnapshotFrame
 * @typedef {{type: 'delta', sub: string, id: string, base: number, version: number,
 *   set: Record<string, any>, lastUpdated: string, position: string, created?: boolean,
 *   conflated?: boolean, touched?: string[], expiresAt?: string|null}} DeltaFrame
 *   (`expiresAt`: the event moved the lease: the new deadline, or null when removed;
 *   absent, it is as it was — on a `created` delta, the entity has none)
 * @typedef {{type: 'deleted', sub: string, id: string, base: number, version: number,
 *   lastUpdated: string, position: string, conflated?: boolean, reason?: 'expired'}} DeletedFrame
 *   (`reason: 'expired'`: the hub deleted it because its lease ran out)
 * @typedef {{type: 'left', sub: string, id: string, base: number, version: number,
 *   lastUpdated: string, position: string, conflated?: boolean}} LeftFrame
 *   (a `where` subscription: the entity no longer matches; docs/protocol.md)
 * @typedef {{type: 'reset', sub: string, reason: string}} ResetFrame
 * @typedef {{type: 'synced', sub: string, cursor: string}} SyncedFrame
 * @typedef {SnapshotFrame|DeltaFrame|DeletedFrame|LeftFrame|ResetFrame|SyncedFrame} SubscriptionFrame
 *   What a subscription hands to its consumers. A `reset` (from the hub, or made by
 *   the client when it must read the snapshot again after a reconnect) means: drop
 *   everything this subscription gave you; a fresh snapshot follows.
 *
 * @typedef {{snapshot?: boolean, properties?: string[], touches?: boolean,
 *   where?: Record<string, any>, name?: string, maxQueued?: number}} SubscribeOptions
 *   `where`: only entities whose values match (docs/protocol.md, Value filters): one
 *   that starts matching arrives as a `created` delta, one that stops as `left`.
 */

/**
 * One subscription. It outlives connections: after a reconnect the client subscribes
 * again from its cursor (exactly the missed deltas follow), or with a snapshot when it
 * has none yet (then consumers first get a `reset`).
 *
 * Consume it with `for await (const frame of subscription)` or with
 * {@link Subscription#on}. The iterator's buffer holds at most `maxQueued` frames
 * (default 100,000): a consumer that falls further behind ends the iteration with a
 * FluxError `overflow` (listeners are called synchronously and never buffer).
 *
 * @implements {AsyncIterable<SubscriptionFrame>}
 */
export class Subscription {
  /**
   * @param {FluxClient} client
   * @param {string} name
   * @param {Filter} filter
   * @param {SubscribeOptions} options
   */
  constructor(client, name, filter, options) {
    this.client = client;
    /** The subscription's name on the connection (`sub`). */
    this.name = name;
    this.filter = filter;
    this.options = options;
    /** @type {'pending'|'syncing'|'live'|'closed'} */
    this.state = 'pending';
    /** Whether the subscription has been live (synced) at least once. */
    this.everSynced = false;
    /** Frames handed to consumers (resets included). */
    this.received = 0;
    this._cursor = new Cursor();
    /** True between the first snapshot frame (or reset) and `synced`. */
    this._partial = false;
    /** @type {Set<(frame: SubscriptionFrame) => void>} */
    this._listeners = new Set();
    /** @type {SubscriptionFrame[]|null} */
    this._queue = null;
    /** @type {((r: IteratorResult<SubscriptionFrame>) => void)|null} */
    this._waiter = null;
    /** @type {Error|null} */
    this._error = null;
    /** @type {(value: void) => void} */
    let resolveReady = () => {};
    /** @type {(reason: Error) => void} */
    let rejectReady = () => {};
    /** Resolves when the subscription is first live (after its snapshot, if any). */
    this.ready = new Promise((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    this.ready.catch(() => {}); // rejections surface through the iterator too
    this._resolveReady = resolveReady;
    this._rejectReady = rejectReady;
    this._retryTimer = /** @type {any} */ (null);
    this._retries = 0;
  }

  /** The cursor a resume would start from (null until the hub gave one). */
  get cursor() {
    return this._cursor.text();
  }

  /**
   * Replace the resume cursor. For tests and tools: a cursor the hub's delta log no
   * longer holds makes the next resume a `reset` and a fresh snapshot.
   * @param {string|null} text
   */
  set cursor(text) {
    if (text === null) this._cursor.clear();
    else this._cursor.set(text);
  }

  /**
   * Call `listener` with every frame, synchronously, as it arrives.
   * @param {(frame: SubscriptionFrame) => void} listener
   * @returns {() => void} a function that removes the listener
   */
  on(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  /** @returns {AsyncIterator<SubscriptionFrame>} */
  [Symbol.asyncIterator]() {
    if (this._queue === null) this._queue = [];
    return {
      next: () => this._next(),
      return: async () => {
        await this.close();
        return { value: undefined, done: true };
      },
    };
  }

  /** @returns {Promise<IteratorResult<SubscriptionFrame>>} */
  _next() {
    const queue = /** @type {SubscriptionFrame[]} */ (this._queue);
    if (queue.length > 0) {
      return Promise.resolve({ value: /** @type {SubscriptionFrame} */ (queue.shift()), done: false });
    }
    if (this._error) return Promise.reject(this._error);
    if (this.state === 'closed') return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this._waiter = resolve;
    });
  }

  /** Stop the subscription (tells the hub if connected); the iterator ends. */
  async close() {
    if (this.state === 'closed') return;
    this._end(null);
    this.client._subscriptionClosed(this);
  }

  // ---------------------------------------------------------------- client side

  /** The subscribe frame for the current connection (ref added by the client). */
  _frame() {
    /** @type {Record<string, any>} */
    const frame = { type: 'subscribe', sub: this.name, filter: this.filter };
    if (this.options.properties) frame.properties = this.options.properties;
    if (this.options.touches) frame.touches = true;
    if (this.options.where) frame.where = this.options.where;
    const cursor = this._cursor.text();
    if (cursor !== null) {
      frame.from = cursor;
    } else if (this.options.snapshot || this._partial) {
      // (After a reset, a snapshot follows even for a subscription without one.)
      frame.snapshot = true;
      // Part of a snapshot (or the state before a reset) may have been handed out:
      // consumers must drop it, the snapshot comes whole again.
      if (this._partial) this._emit({ type: 'reset', sub: this.name, reason: 'reading the snapshot again after a reconnect' });
    }
    this.state = 'syncing';
    return frame;
  }

  /** @param {Record<string, any>} frame a server frame naming this subscription */
  _onFrame(frame) {
    switch (frame.type) {
      case 'subscribed':
        if (typeof frame.cursor === 'string') {
          // Live from now: no snapshot, no catch-up.
          this._cursor.set(frame.cursor);
          this._live();
        }
        return;
      case 'snapshot':
        this._partial = true;
        this._emit(/** @type {SnapshotFrame} */ (frame));
        return;
      case 'synced':
        this._cursor.set(frame.cursor);
        this._partial = false;
        this._live(); // first: consumers hearing `synced` see the subscription live
        this._emit(/** @type {SyncedFrame} */ (frame));
        return;
      case 'checkpoint':
        this._cursor.set(frame.cursor);
        return;
      case 'delta':
      case 'deleted':
      case 'left':
        // A conflated delta's position is not a point to resume from (deltas merged
        // into it may lie before it); the checkpoint that follows is.
        if (!frame.conflated && typeof frame.position === 'string') this._cursor.advance(frame.position);
        this._emit(/** @type {DeltaFrame|DeletedFrame|LeftFrame} */ (frame));
        return;
      case 'reset':
        this._cursor.clear();
        this._partial = true;
        this.state = 'syncing';
        this._emit(/** @type {ResetFrame} */ (frame));
        return;
      default:
    }
  }

  _live() {
    this.state = 'live';
    this.everSynced = true;
    this._retries = 0;
    this._resolveReady();
  }

  /** @param {SubscriptionFrame} frame */
  _emit(frame) {
    this.received += 1;
    for (const listener of this._listeners) {
      try {
        listener(frame);
      } catch (error) {
        this.client._report(/** @type {Error} */ (error));
      }
    }
    if (this._queue === null) return;
    if (this._waiter) {
      const waiter = this._waiter;
      this._waiter = null;
      waiter({ value: frame, done: false });
      return;
    }
    this._queue.push(frame);
    const max = this.options.maxQueued ?? 100_000;
    if (this._queue.length > max) {
      this._end(new FluxError('overflow', `subscription ${this.name}: more than ${max} frames waiting to be read`));
      this.client._subscriptionClosed(this);
    }
  }

  /** @param {Error|null} error */
  _end(error) {
    if (this.state === 'closed') return;
    this.state = 'closed';
    clearTimeout(this._retryTimer);
    if (error) {
      this._error = error;
      this._rejectReady(error);
    } else {
      this._rejectReady(new FluxError('closed', `subscription ${this.name} was closed`));
    }
    if (this._waiter) {
      const waiter = this._waiter;
      this._waiter = null;
      if (error) {
        this._error = null; // delivered
        // Reject via a settled promise: the waiter only resolves.
        this._queue = [];
        waiter(/** @type {any} */ (Promise.reject(error)));
      } else waiter({ value: undefined, done: true });
    }
  }
}

// ---------------------------------------------------------------------------- entity cache

/**
 * @typedef {{type: 'entity', id: string, entity: Entity|null, frame: SubscriptionFrame}
 *   | {type: 'reset', reason: string} | {type: 'synced'}} CacheChange
 *   What {@link EntityCache#onChange} listeners hear: an entity changed (`entity` is
 *   null when it was deleted), everything was dropped, or the replica is complete.
 */

/**
 * Every entity a filter matches, as the hub has it, kept current from a snapshot plus
 * deltas — across reconnects (resume) and resets (dropped, then read again).
 *
 * It checks the protocol's promise as it applies deltas: a delta must start from the
 * version held, or create an entity not held. A violation (which the hub promises
 * never happens) is counted in `gaps` and applied as well as it can be.
 *
 * ```js
 * const cache = new EntityCache(client, { prefixes: ['crew/'] });
 * await cache.ready;
 * cache.onChange((change) => render(cache));
 * cache.get('crew/task-7')?.properties;
 * ```
 */
export class EntityCache {
  /**
   * @param {FluxClient} client
   * @param {Filter} filter
   * @param {{properties?: string[], name?: string}} [options]
   */
  constructor(client, filter, options = {}) {
    /** The replica: entity id → entity. Read it; do not change it. */
    /** @type {Map<string, Entity>} */
    this.entities = new Map();
    /** True while the replica is complete (false after a reset, until `synced`). */
    this.synced = false;
    /** Deltas that did not follow what was held (should stay 0). */
    this.gaps = 0;
    /** Resets seen (from the hub, or a snapshot read again after a reconnect). */
    this.resets = 0;
    /** @type {Set<(change: CacheChange) => void>} */
    this._listeners = new Set();
    this.subscription = client.subscribe(filter, { ...options, snapshot: true });
    this._off = this.subscription.on((frame) => this._apply(frame));
    /** Resolves when the snapshot has been applied (the first time). */
    this.ready = this.subscription.ready;
  }

  /** @param {string} id @returns {Entity|undefined} */
  get(id) {
    return this.entities.get(id);
  }

  /** @param {string} id */
  has(id) {
    return this.entities.has(id);
  }

  get size() {
    return this.entities.size;
  }

  /** @returns {IterableIterator<Entity>} */
  values() {
    return this.entities.values();
  }

  /** `{id: {version, properties}}`, e.g. to compare with what the REST API shows. */
  toJSON() {
    /** @type {Record<string, {version: number, properties: Record<string, any>}>} */
    const out = {};
    for (const [id, e] of this.entities) out[id] = { version: e.version, properties: e.properties };
    return out;
  }

  /**
   * @param {(change: CacheChange) => void} listener
   * @returns {() => void} removes the listener
   */
  onChange(listener) {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  /**
   * Resolve once `predicate(cache)` holds (checked now and after every change).
   * @param {(cache: EntityCache) => boolean} predicate
   * @param {number} [timeout] milliseconds (default 30,000)
   * @returns {Promise<void>}
   */
  waitUntil(predicate, timeout = 30_000) {
    if (predicate(this)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new FluxError('timeout', `condition not met within ${timeout} ms`));
      }, timeout);
      const off = this.onChange(() => {
        if (predicate(this)) {
          clearTimeout(timer);
          off();
          resolve();
        }
      });
    });
  }

  /** Stop following the hub (the replica keeps its last state). */
  async close() {
    this._off();
    await this.subscription.close();
  }

  /** @param {SubscriptionFrame} frame */
  _apply(frame) {
    const entities = this.entities;
    switch (frame.type) {
      case 'reset':
        entities.clear();
        this.synced = false;
        this.resets += 1;
        this._notify({ type: 'reset', reason: frame.reason });
        return;
      case 'snapshot':
        for (const e of frame.entities) {
          /** @type {Entity} */
          const entity = { id: e.id, properties: { ...e.properties }, version: e.version, lastUpdated: e.lastUpdated };
          if (e.expiresAt) entity.expiresAt = e.expiresAt;
          entities.set(e.id, entity);
          this._notify({ type: 'entity', id: e.id, entity, frame });
        }
        return;
      case 'synced':
        this.synced = true;
        this._notify({ type: 'synced' });
        return;
      case 'delta': {
        let held = entities.get(frame.id);
        if (held === undefined) {
          if (!frame.created) this.gaps += 1;
          held = { id: frame.id, properties: { ...frame.set }, version: frame.version, lastUpdated: frame.lastUpdated };
          if (frame.expiresAt) held.expiresAt = frame.expiresAt;
          entities.set(frame.id, held);
        } else {
          // On a `where` subscription an entry replaces what is held, whatever its base.
          const entry = frame.created && this.subscription.options.where;
          if (!entry && this._gap(frame.base, held)) this.gaps += 1;
          held.properties = frame.created ? { ...frame.set } : { ...held.properties, ...frame.set };
          held.version = frame.version;
          held.lastUpdated = frame.lastUpdated;
          // The lease: a created delta says all of it; another only when it moved.
          if (frame.created || 'expiresAt' in frame) {
            if (frame.expiresAt) held.expiresAt = frame.expiresAt;
            else delete held.expiresAt;
          }
        }
        this._notify({ type: 'entity', id: frame.id, entity: held, frame });
        return;
      }
      case 'deleted': {
        const held = entities.get(frame.id);
        if (held === undefined || this._gap(frame.base, held)) this.gaps += 1;
        entities.delete(frame.id);
        this._notify({ type: 'entity', id: frame.id, entity: null, frame });
        return;
      }
      case 'left':
        // (After a resume, a `left` may name an entity not held: nothing to drop.)
        if (entities.delete(frame.id)) this._notify({ type: 'entity', id: frame.id, entity: null, frame });
        return;
      default:
    }
  }

  /**
   * Whether a delta from `base` does not follow the entity held.
   * @param {number} base
   * @param {Entity} held
   */
  _gap(base, held) {
    // With a property list, `base` may be ahead of what is held (deltas touching only
    // other properties were not sent): only a base behind it is a gap.
    return this.subscription.options.properties ? base < held.version : base !== held.version;
  }

  /** @param {CacheChange} change */
  _notify(change) {
    for (const listener of this._listeners) {
      try {
        listener(change);
      } catch (error) {
        this.subscription.client._report(/** @type {Error} */ (error));
      }
    }
  }
}

// ---------------------------------------------------------------------------- client

/**
 * @typedef {{frame: Record<string, any>, resolve: (frame: any) => void,
 *   reject: (error: Error) => void, timer: any, resend: boolean,
 *   onFrame?: (frame: Record<string, any>) => void}} Pending
 */

/**
 * A connection to one hub that reconnects by itself.
 *
 * ```js
 * const client = await FluxClient.connect('http://localhost:3000');
 * await client.publish(makeEvent('crew/task-7', { state: 'open' }));
 * for await (const frame of client.subscribe({ prefixes: ['crew/'] }, { snapshot: true })) { … }
 * ```
 *
 * Connection states: `idle` (not started), `connecting` (first attempt, or retrying
 * before the first success), `open`, `reconnecting` (lost; waiting out a backoff
 * delay or trying), `closed` (by {@link FluxClient#close}). Listen with
 * `client.on('state', fn)`.
 *
 * Requests made while not connected wait for the connection (up to
 * `requestTimeout`). Unanswered requests are sent again on the next connection:
 * publishes are safe to resend because every event carries an `eventId`.
 */
export class FluxClient {
  /**
   * @param {string} [url] the hub: `http(s)://host:port` (REST base; the WebSocket is
   *   `/api/ws` under it) or `ws(s)://host:port/api/ws`. In a page, defaults to the
   *   page's origin.
   * @param {ClientOptions} [options]
   *   - `token`: a namespace (or admin) token; sent in an `auth` frame and as
   *     `Authorization: Bearer` on REST calls.
   *   - `encoding`: `json` (default) or `msgpack`.
   *   - `WebSocket`: a WebSocket class (Node 20: `import WebSocket from 'ws'`);
   *     default `globalThis.WebSocket`.
   *   - `fetch`: default `globalThis.fetch`.
   *   - `reconnect`: backoff in ms, default `{initialDelay: 100, maxDelay: 5000, factor: 2}`.
   *   - `connectTimeout`: ms {@link FluxClient#connect} waits for a first connection
   *     (default 30,000; `Infinity`: forever). Past it, the client closes.
   *   - `openTimeout`: ms one WebSocket may take to open (default 10,000).
   *   - `requestTimeout`: ms a request may wait for its answer, offline time included
   *     (default 30,000).
   *   - `publishRetries`: how often events answered `unavailable` are sent again
   *     (same `eventId`, with backoff; default 5).
   *   - `source`, `stream`: defaults for {@link FluxClient#update}.
   */
  constructor(url, options = {}) {
    const base = url ?? globalThis.location?.origin;
    if (!base) throw new TypeError('FluxClient: give the hub URL (no page origin to default to)');
    const { httpUrl, wsUrl } = hubUrls(base);
    /** REST base URL, without a trailing slash. */
    this.httpUrl = httpUrl;
    /** WebSocket URL. */
    this.wsUrl = wsUrl;
    this.token = options.token ?? null;
    this.encoding = options.encoding ?? 'json';
    if (this.encoding !== 'json' && this.encoding !== 'msgpack') {
      throw new TypeError(`FluxClient: encoding must be "json" or "msgpack", not ${JSON.stringify(this.encoding)}`);
    }
    this.protocol = this.encoding === 'json' ? JSON_PROTOCOL : MSGPACK_PROTOCOL;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this._WebSocket) {
      throw new TypeError("FluxClient: no WebSocket here; on Node 20 pass {WebSocket} from the 'ws' package");
    }
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.backoff = { initialDelay: 100, maxDelay: 5000, factor: 2, ...options.reconnect };
    this.connectTimeout = options.connectTimeout ?? 30_000;
    this.openTimeout = options.openTimeout ?? 10_000;
    this.requestTimeout = options.requestTimeout ?? 30_000;
    this.publishRetries = options.publishRetries ?? 5;
    this.source = options.source ?? 'js-client';
    this.stream = options.stream ?? 'sdk';
    /** @type {ConnectionState} */
    this.state = 'idle';
    /** Figures about this client's connection, for display. */
    this.stats = {
      /** Connections opened. */
      connects: 0,
      /** Connections lost (not closed by us). */
      disconnects: 0,
      framesReceived: 0,
      framesSent: 0,
      /** When the current connection opened (ms since the epoch), or null. */
      openedAt: /** @type {number|null} */ (null),
      /** The last close code and reason from the hub or the network. */
      lastClose: /** @type {{code: number, reason: string}|null} */ (null),
    };
    /** Failed attempts since the last successful open. */
    this.attempt = 0;
    /** @type {any} */
    this._ws = null;
    this._nextRef = 1;
    /** @type {Map<number, Pending>} */
    this._pending = new Map();
    /** @type {Map<string, Subscription>} */
    this._subs = new Map();
    this._nextSub = 1;
    /** @type {Record<string, Set<(value: any) => void>>} */
    this._listeners = { state: new Set(), error: new Set() };
    /** @type {{resolve: () => void, reject: (e: Error) => void}[]} */
    this._openWaiters = [];
    this._timer = /** @type {any} */ (null);
    this._openTimer = /** @type {any} */ (null);
    this._connectTimer = /** @type {any} */ (null);
  }

  /**
   * Create a client and wait for its first connection.
   * @param {string} [url]
   * @param {ClientOptions} [options]
   * @returns {Promise<FluxClient>}
   */
  static async connect(url, options) {
    const client = new FluxClient(url, options);
    await client.connect();
    return client;
  }

  /**
   * Start connecting (if not started) and wait until the connection is open. Failed
   * attempts are retried with backoff; past `connectTimeout` without success, the
   * client is closed and this rejects with a FluxError `timeout`.
   * @returns {Promise<void>}
   */
  connect() {
    if (this.state === 'closed') return Promise.reject(new FluxError('closed', 'the client is closed'));
    if (this.state === 'open') return Promise.resolve();
    const opened = new Promise((resolve, reject) => {
      this._openWaiters.push({ resolve: () => resolve(undefined), reject });
    });
    if (this.state === 'idle') {
      this._setState('connecting', {});
      if (Number.isFinite(this.connectTimeout)) {
        this._connectTimer = setTimeout(() => {
          if (this.stats.connects === 0) {
            const error = new FluxError('timeout', `no connection to ${this.wsUrl} within ${this.connectTimeout} ms`);
            this._failOpenWaiters(error);
            this.close();
          }
        }, this.connectTimeout);
      }
      this._open();
    }
    return /** @type {Promise<void>} */ (opened);
  }

  /**
   * Listen to `state` ({@link StateChange}) or `error` (an Error the client could not
   * hand to a caller: a refused `auth`, a listener that threw, a frame it cannot read).
   * @param {'state'|'error'} event
   * @param {(value: any) => void} listener
   * @returns {() => void} removes the listener
   */
  on(event, listener) {
    this._listeners[event].add(listener);
    return () => this._listeners[event].delete(listener);
  }

  /** Close the connection and stop reconnecting; waiting calls reject (`closed`). */
  close() {
    if (this.state === 'closed') return;
    clearTimeout(this._timer);
    clearTimeout(this._openTimer);
    clearTimeout(this._connectTimer);
    const error = new FluxError('closed', 'the client was closed');
    for (const [ref, pending] of this._pending) {
      clearTimeout(pending.timer);
      this._pending.delete(ref);
      pending.reject(error);
    }
    for (const sub of [...this._subs.values()]) sub._end(null);
    this._subs.clear();
    this._failOpenWaiters(error);
    const ws = this._ws;
    this._ws = null;
    this.stats.openedAt = null;
    this._setState('closed', {});
    if (ws) {
      try {
        ws.close(1000, 'client closed');
      } catch {
        // already closing
      }
    }
  }

  /**
   * Drop the current connection and reconnect at once, resuming every subscription
   * (e.g. when the network changed). Nothing is lost: that is what resume is for.
   */
  reconnectNow() {
    if (this.state === 'closed' || this.state === 'idle') return;
    this.attempt = 0;
    if (this._ws) {
      const ws = this._ws;
      this._lost(ws, 4000, 'reconnecting on request', 0);
      try {
        ws.close(4000, 'reconnecting');
      } catch {
        // already closing
      }
    } else {
      clearTimeout(this._timer);
      this._open();
    }
  }

  // ---------------------------------------------------------------- publish

  /**
   * Publish one event or many (in order; split into frames of at most 1,000).
   * Events without an `eventId` get one first, so resends are never applied twice.
   * Refusals (`conflict`, `invalid`, …) are results, not exceptions; events answered
   * `unavailable` are sent again (same `eventId`) up to `publishRetries` times.
   *
   * @overload
   * @param {FluxEvent} events
   * @returns {Promise<PublishResult>}
   *
   * @overload
   * @param {FluxEvent[]} events
   * @returns {Promise<PublishResult[]>}
   *
   * @param {FluxEvent|FluxEvent[]} events
   * @returns {Promise<PublishResult|PublishResult[]>}
   * @throws {FluxError} `timeout` (outcome unknown: publish the same events again —
   *   they keep their `eventId`s, listed in `details.eventIds`), `closed`, or a
   *   frame-level refusal (`too_many_events`, `too_large`, `bad_frame`).
   */
  async publish(events) {
    const single = !Array.isArray(events);
    const list = (single ? [events] : events).map((e) => (e.eventId ? e : { ...e, eventId: uuid7() }));
    /** @type {PublishResult[]} */
    const results = [];
    for (let i = 0; i < list.length; i += MAX_EVENTS_PER_FRAME) {
      results.push(...(await this._publishFrame(list.slice(i, i + MAX_EVENTS_PER_FRAME))));
    }
    return single ? results[0] : results;
  }

  /**
   * Publish properties of one entity; resolves with its result, throws on refusal.
   * @param {string} entityId
   * @param {Record<string, any>} properties
   * @param {{ifVersion?: number, eventId?: string, stream?: string, source?: string}} [options]
   * @returns {Promise<PublishResult>}
   * @throws {FluxError} the refusal's code (`conflict` with `details.version`, the
   *   entity's current version), or as {@link FluxClient#publish}.
   */
  async update(entityId, properties, options = {}) {
    const event = makeEvent(entityId, properties, { stream: this.stream, source: this.source, ...options });
    const result = await this.publish(event);
    if (result.error) {
      throw new FluxError(result.error.code, result.error.message, { eventId: result.eventId, version: result.version });
    }
    return result;
  }

  /** @param {FluxEvent[]} events @returns {Promise<PublishResult[]>} */
  async _publishFrame(events) {
    /** @type {PublishResult[]} */
    const results = await this._publishOnce(events);
    for (let attempt = 1; attempt <= this.publishRetries; attempt++) {
      const again = results.flatMap((r, i) => (r.error?.code === 'unavailable' ? [i] : []));
      if (again.length === 0) break;
      await sleep(this._delay(attempt));
      const retried = await this._publishOnce(again.map((i) => events[i]));
      again.forEach((index, k) => {
        results[index] = retried[k];
      });
    }
    return results;
  }

  /** @param {FluxEvent[]} events @returns {Promise<PublishResult[]>} */
  async _publishOnce(events) {
    let ack;
    try {
      ack = await this._request({ type: 'publish', events }, true);
    } catch (error) {
      if (error instanceof FluxError && error.code === 'timeout') {
        error.details.eventIds = events.map((e) => e.eventId);
      }
      throw error;
    }
    return ack.results.map((/** @type {any} */ r) => ({ ...r, ok: !r.error }));
  }

  // ---------------------------------------------------------------- subscribe

  /**
   * Subscribe to the entities a filter matches. Returns at once; the subscription is
   * sent now or when connected, and again (resuming) after every reconnect.
   *
   * @param {Filter} filter e.g. `{prefixes: ['crew/']}`, `{all: true}`.
   * @param {SubscribeOptions} [options]
   *   - `snapshot`: first the current state of every matching entity;
   *   - `properties`: only deltas changing these (carrying only these);
   *   - `touches`: also deltas of events that changed nothing;
   *   - `name`: the `sub` name (default: generated);
   *   - `maxQueued`: the iterator's buffer bound.
   * @returns {Subscription}
   */
  subscribe(filter, options = {}) {
    if (this.state === 'closed') throw new FluxError('closed', 'the client is closed');
    const name = options.name ?? `s${this._nextSub++}`;
    if (this._subs.has(name)) throw new FluxError('duplicate_subscription', `subscription ${name} exists`);
    const sub = new Subscription(this, name, filter, options);
    this._subs.set(name, sub);
    if (this.state === 'open') this._sendSubscribe(sub);
    else if (this.state === 'idle') this.connect().catch((error) => this._report(error));
    return sub;
  }

  /**
   * A live replica of a filter's entities (see {@link EntityCache}).
   * @param {Filter} filter
   * @param {{properties?: string[], name?: string}} [options]
   */
  cache(filter, options) {
    return new EntityCache(this, filter, options);
  }

  /** @param {Subscription} sub */
  _sendSubscribe(sub) {
    const frame = sub._frame();
    this._request(frame, false, (reply) => sub._onFrame(reply)).catch((error) => {
      if (!(error instanceof FluxError) || sub.state === 'closed' || this._subs.get(sub.name) !== sub) return;
      if (error.code === 'disconnected' || error.code === 'timeout') return; // resubscribed on reconnect
      if (error.code === 'bad_cursor') {
        sub.cursor = null;
        if (this.state === 'open') this._sendSubscribe(sub);
        return;
      }
      if (error.code === 'unavailable') {
        this._retrySubscription(sub);
        return;
      }
      // A refusal that a retry will not change (bad filter, forbidden, …).
      this._subs.delete(sub.name);
      sub._end(error);
    });
  }

  /** The hub ended (or could not start) a subscription: start it again later. */
  /** @param {Subscription} sub */
  _retrySubscription(sub) {
    clearTimeout(sub._retryTimer);
    sub.state = 'pending';
    sub._retries += 1;
    sub._retryTimer = setTimeout(() => {
      if (this.state === 'open' && this._subs.get(sub.name) === sub && sub.state === 'pending') {
        this._sendSubscribe(sub);
      }
    }, this._delay(sub._retries));
  }

  /** @param {Subscription} sub */
  _subscriptionClosed(sub) {
    if (this._subs.get(sub.name) !== sub) return;
    this._subs.delete(sub.name);
    if (this.state === 'open') {
      this._request({ type: 'unsubscribe', sub: sub.name }, false).catch(() => {});
    }
  }

  // ---------------------------------------------------------------- REST

  /**
   * One entity, or null if it does not exist (`GET /api/state/entities/<id>`).
   * @param {string} id
   * @returns {Promise<Entity|null>}
   */
  async get(id) {
    try {
      return (await this._http('GET', `/api/state/entities/${encodeURIComponent(id)}`)).data;
    } catch (error) {
      if (error instanceof FluxError && error.details.status === 404) return null;
      throw error;
    }
  }

  /**
   * Entities in id order (`GET /api/state/entities`): all matching ones, or one page
   * when `limit` is given (see {@link FluxClient#listPage} for the next cursor).
   * @param {{prefix?: string, namespace?: string, limit?: number, cursor?: string,
   *   where?: Record<string, any>}} [query] `where`: a value filter (docs/protocol.md)
   * @returns {Promise<Entity[]>}
   */
  async list(query = {}) {
    return (await this.listPage(query)).entities;
  }

  /**
   * One page of entities and the cursor of the next (null on the last page).
   * @param {{prefix?: string, namespace?: string, limit?: number, cursor?: string,
   *   where?: Record<string, any>}} [query] with a `where`, a page may hold fewer than
   *   `limit` entities while `next` says more may follow
   * @returns {Promise<{entities: Entity[], next: string|null}>}
   */
  async listPage(query = {}) {
    /** @type {Record<string, any>} */
    const params = { ...query };
    if (query.where !== undefined) params.where = JSON.stringify(query.where);
    const { data, headers } = await this._http('GET', '/api/state/entities', params);
    return { entities: data, next: headers.get('x-next-cursor') };
  }

  /**
   * An entity's recent events, newest first (`GET /api/events?entity=…`).
   * @param {string} id
   * @param {{limit?: number, since?: string}} [query] `since`: RFC 3339 (default: 24 h ago)
   * @returns {Promise<Record<string, any>[]>}
   */
  async history(id, query = {}) {
    return (await this._http('GET', '/api/events', { entity: id, ...query })).data;
  }

  /**
   * Delete an entity (`DELETE /api/state/entities/<id>`; 200 even if absent).
   * @param {string} id
   * @returns {Promise<{entity_id: string, eventId: string}>}
   */
  async delete(id) {
    return (await this._http('DELETE', `/api/state/entities/${encodeURIComponent(id)}`)).data;
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {Record<string, any>} [query]
   * @returns {Promise<{data: any, headers: Headers}>}
   */
  async _http(method, path, query = {}) {
    if (!this._fetch) throw new FluxError('unsupported', 'no fetch here: pass {fetch}');
    const url = new URL(this.httpUrl + path);
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
    /** @type {Record<string, string>} */
    const headers = { accept: 'application/json' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.requestTimeout);
    let response;
    let text;
    try {
      response = await this._fetch(url, { method, headers, signal: controller.signal, cache: 'no-store' });
      text = await response.text();
    } catch (error) {
      const timedOut = controller.signal.aborted;
      throw new FluxError(timedOut ? 'timeout' : 'network', `${method} ${url.pathname}: ${timedOut ? 'no answer' : /** @type {Error} */ (error).message}`);
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = text;
    }
    if (!response.ok) {
      const message = (data && typeof data === 'object' && data.error) || response.statusText;
      const code = { 400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 429: 'rate_limited', 503: 'unavailable' }[response.status];
      throw new FluxError(code ?? `http_${response.status}`, String(message), { status: response.status });
    }
    return { data, headers: response.headers };
  }

  // ---------------------------------------------------------------- connection

  _open() {
    clearTimeout(this._timer);
    let ws;
    try {
      ws = new this._WebSocket(this.wsUrl, [this.protocol]);
    } catch (error) {
      // A malformed URL: retrying will not help.
      this._failOpenWaiters(/** @type {Error} */ (error));
      this.close();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    ws.addEventListener('open', () => this._onOpen(ws));
    ws.addEventListener('message', (/** @type {{data: any}} */ event) => this._onMessage(ws, event.data));
    ws.addEventListener('close', (/** @type {{code: number, reason: string}} */ event) => this._lost(ws, event.code, event.reason));
    ws.addEventListener('error', () => {}); // a close event follows
    clearTimeout(this._openTimer);
    this._openTimer = setTimeout(() => {
      if (this._ws === ws && ws.readyState === 0) {
        this._lost(ws, 1006, `not open after ${this.openTimeout} ms`);
        try {
          ws.close();
        } catch {
          // never opened
        }
      }
    }, this.openTimeout);
  }

  /** @param {any} ws */
  _onOpen(ws) {
    if (ws !== this._ws) return;
    clearTimeout(this._openTimer);
    if (ws.protocol !== this.protocol) {
      const error = new FluxError('protocol', `the server at ${this.wsUrl} does not speak ${this.protocol} (is it a Flux hub?)`);
      this._report(error);
      this._lost(ws, 1002, error.message);
      ws.close(1000);
      return;
    }
    clearTimeout(this._connectTimer);
    this.attempt = 0;
    this.stats.connects += 1;
    this.state = 'open'; // listeners hear of it below, once everything is sent
    this.stats.openedAt = Date.now();
    // The hub handles frames in the order sent: auth first, then subscriptions
    // (resuming from their cursors), then the requests still unanswered.
    if (this.token) {
      this._request({ type: 'auth', token: this.token }, false).catch((error) => {
        if (error instanceof FluxError && error.code !== 'disconnected' && error.code !== 'closed') this._report(error);
      });
    }
    for (const sub of this._subs.values()) {
      clearTimeout(sub._retryTimer);
      this._sendSubscribe(sub);
    }
    for (const [ref, pending] of this._pending) {
      if (pending.resend) this._send({ ...pending.frame, ref });
    }
    this._setState('open', {});
    const waiters = this._openWaiters;
    this._openWaiters = [];
    for (const w of waiters) w.resolve();
  }

  /**
   * The connection is gone (closed by the hub, the network, or us for a reconnect).
   * @param {any} ws
   * @param {number} code
   * @param {string} reason
   * @param {number} [delay] ms before the next attempt (default: backoff)
   */
  _lost(ws, code, reason, delay) {
    if (ws !== this._ws) return;
    this._ws = null;
    clearTimeout(this._openTimer);
    if (this.state === 'closed') return;
    const wasOpen = this.state === 'open';
    if (wasOpen) this.stats.disconnects += 1;
    this.stats.openedAt = null;
    this.stats.lastClose = { code, reason };
    // Requests that a new connection does not send again fail now.
    const error = new FluxError('disconnected', `connection lost (${code}${reason ? `: ${reason}` : ''})`);
    for (const [ref, pending] of this._pending) {
      if (!pending.resend) {
        clearTimeout(pending.timer);
        this._pending.delete(ref);
        pending.reject(error);
      }
    }
    for (const sub of this._subs.values()) if (sub.state !== 'closed') sub.state = 'pending';
    this.attempt += 1;
    const wait = delay ?? this._delay(this.attempt);
    const state = this.stats.connects === 0 ? 'connecting' : 'reconnecting';
    this._setState(state, { delay: wait, code, reason });
    this._timer = setTimeout(() => this._open(), wait);
  }

  /**
   * A backoff delay: exponential, capped, with the upper half random (jitter), so
   * that many clients cut off at once do not all come back at once.
   * @param {number} attempt 1, 2, …
   */
  _delay(attempt) {
    const { initialDelay, maxDelay, factor } = this.backoff;
    const full = Math.min(maxDelay, initialDelay * factor ** Math.max(0, attempt - 1));
    return Math.round(full / 2 + (Math.random() * full) / 2);
  }

  /** @param {any} ws @param {string|ArrayBuffer} data */
  _onMessage(ws, data) {
    if (ws !== this._ws) return;
    let frame;
    try {
      frame = typeof data === 'string' ? JSON.parse(data) : msgpack.decode(new Uint8Array(data));
    } catch (error) {
      this._report(new FluxError('protocol', `unreadable frame: ${/** @type {Error} */ (error).message}`));
      return;
    }
    this.stats.framesReceived += 1;
    const ref = frame.ref;
    const pending = ref !== undefined && ref !== null ? this._pending.get(ref) : undefined;
    const sub = typeof frame.sub === 'string' ? this._subs.get(frame.sub) : undefined;
    if (pending) {
      this._pending.delete(ref);
      clearTimeout(pending.timer);
      if (frame.type === 'error') {
        pending.reject(new FluxError(frame.code ?? 'error', frame.message ?? '', { frame }));
      } else {
        // Synchronously, before the next frame (a delta may follow at once).
        pending.onFrame?.(frame);
        pending.resolve(frame);
      }
      return;
    }
    if (frame.type === 'error') {
      if (sub && frame.code === 'unavailable') {
        // The hub had to end this subscription (Redis failed): start it again later.
        this._retrySubscription(sub);
        return;
      }
      this._report(new FluxError(frame.code ?? 'error', frame.message ?? '', { frame }));
      return;
    }
    if (sub && sub.state !== 'pending') sub._onFrame(frame);
  }

  /**
   * Send a request and resolve with its answer (the frame of the same `ref`).
   * @param {Record<string, any>} frame
   * @param {boolean} resend whether to send it again on a new connection if unanswered
   * @param {(frame: Record<string, any>) => void} [onFrame] called synchronously with the answer
   * @returns {Promise<any>}
   */
  _request(frame, resend, onFrame) {
    if (this.state === 'closed') return Promise.reject(new FluxError('closed', 'the client is closed'));
    const ref = this._nextRef++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this._pending.delete(ref)) {
          reject(new FluxError('timeout', `no answer to ${frame.type} within ${this.requestTimeout} ms`));
        }
      }, this.requestTimeout);
      this._pending.set(ref, { frame, resolve, reject, timer, resend, onFrame });
      if (this.state === 'open') this._send({ ...frame, ref });
      else if (!resend) {
        this._pending.delete(ref);
        clearTimeout(timer);
        reject(new FluxError('disconnected', 'not connected'));
      } else if (this.state === 'idle') this.connect().catch((error) => this._report(error));
    });
  }

  /** @param {Record<string, any>} frame */
  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return; // sent again on the next connection
    ws.send(this.encoding === 'json' ? JSON.stringify(frame) : msgpack.encode(frame));
    this.stats.framesSent += 1;
  }

  /** @param {ConnectionState} state @param {{delay?: number, code?: number, reason?: string}} info */
  _setState(state, info) {
    this.state = state;
    /** @type {StateChange} */
    const change = { state, attempt: this.attempt, ...info };
    for (const listener of this._listeners.state) {
      try {
        listener(change);
      } catch (error) {
        this._report(/** @type {Error} */ (error));
      }
    }
  }

  /** @param {Error} error */
  _failOpenWaiters(error) {
    const waiters = this._openWaiters;
    this._openWaiters = [];
    for (const w of waiters) w.reject(error);
  }

  /** @param {Error} error */
  _report(error) {
    if (this._listeners.error.size === 0) {
      // Nobody listens: do not lose it silently.
      globalThis.console?.warn?.('flux-client:', error);
      return;
    }
    for (const listener of this._listeners.error) {
      try {
        listener(error);
      } catch {
        // an error listener's own failure has nowhere to go
      }
    }
  }
}

/**
 * Create a client and wait for its first connection (`FluxClient.connect`).
 * @param {string} [url]
 * @param {ClientOptions} [options]
 */
export function connect(url, options) {
  return FluxClient.connect(url, options);
}

/**
 * The REST base and WebSocket URLs of a hub given either.
 * @param {string} url
 * @returns {{httpUrl: string, wsUrl: string}}
 */
export function hubUrls(url) {
  const u = new URL(url);
  let path = u.pathname.replace(/\/+$/, '');
  if (u.protocol === 'ws:' || u.protocol === 'wss:') {
    if (path === '') path = '/api/ws';
    const base = path.endsWith('/api/ws') ? path.slice(0, -'/api/ws'.length) : '';
    const http = u.protocol === 'ws:' ? 'http:' : 'https:';
    return { httpUrl: `${http}//${u.host}${base}`, wsUrl: `${u.protocol}//${u.host}${path}${u.search}` };
  }
  if (u.protocol === 'http:' || u.protocol === 'https:') {
    const ws = u.protocol === 'http:' ? 'ws:' : 'wss:';
    return { httpUrl: `${u.protocol}//${u.host}${path}`, wsUrl: `${ws}//${u.host}${path}/api/ws` };
  }
  throw new TypeError(`FluxClient: unsupported URL ${url} (use http(s):// or ws(s)://)`);
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

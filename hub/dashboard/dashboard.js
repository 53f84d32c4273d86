// @ts-check
/**
 * The hub's dashboard (docs/dashboard.md): a live table of entities with a filter,
 * an entity's detail and recent history, the hub's figures, and the connection state.
 *
 * Entities come from an EntityCache of the JavaScript client (native protocol: a
 * snapshot, then deltas; resumed after every reconnect). The figures come from the
 * Flux-compatible `metrics_update` message, on a second, compat WebSocket narrowed to
 * one entity so that it carries nothing else. Everything is served by the hub itself.
 *
 * Options in the page's fragment: `#filter=crew/` (the filter box's text),
 * `#where=status=open load<5` (the value filter box's text) and
 * `#token=…` (a namespace token, for hubs with private reads; the fragment never
 * reaches the server's logs).
 */

import { FluxClient } from './flux-client.js';

/** Rows the table shows at most (the cache holds every match; type a prefix to narrow). */
const MAX_ROWS = 500;
/** Characters of a property summary in the table. */
const SUMMARY_CHARS = 160;
/** Events shown in an entity's history. */
const HISTORY_LIMIT = 20;
/** Without a metrics_update for this long (ms), the figures are shown as stale. */
const METRICS_STALE_AFTER = 7000;

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

const hash = new URLSearchParams(location.hash.slice(1));
const token = hash.get('token');
// The hub's base URL: where this page came from (works behind a path prefix too).
const hubUrl = new URL('.', location.href).href;

const client = new FluxClient(hubUrl, {
  token,
  connectTimeout: Infinity, // a dashboard waits for its hub however long it takes
  reconnect: { initialDelay: 200, maxDelay: 5000, factor: 2 },
});

// ------------------------------------------------------------------------- state

/** @type {import('./flux-client.js').EntityCache|null} */
let cache = null;
/** @type {string|null} */
let selected = null;
let updates = 0;
/** @type {{state: string, delay?: number, attempt: number}} */
let connection = { state: 'connecting', attempt: 0 };

// ------------------------------------------------------------------------- connection state

/** The last connection changes (for the console, and for tests' failure reports). */
const stateLog = /** @type {Record<string, any>[]} */ ([]);

client.on('state', (change) => {
  connection = change;
  stateLog.push({ at: new Date().toISOString(), ...change });
  if (stateLog.length > 50) stateLog.shift();
  showConnection();
});
client.on('error', (error) => console.warn('flux:', error));
addEventListener('online', () => client.reconnectNow());

function showConnection() {
  const box = $('connection');
  let state;
  let text;
  if (connection.state === 'open') {
    const live = cache !== null && cache.subscription.state === 'live';
    state = live ? 'live' : 'connecting';
    text = live ? 'live' : 'connected, syncing…';
  } else if (connection.state === 'reconnecting') {
    state = 'reconnecting';
    const wait = connection.delay ? ` (attempt ${connection.attempt}, next in ${(connection.delay / 1000).toFixed(1)} s)` : '';
    text = `reconnecting${wait}`;
  } else if (connection.state === 'closed') {
    state = 'closed';
    text = 'closed';
  } else {
    state = 'connecting';
    text = connection.attempt > 0 ? `connecting (attempt ${connection.attempt + 1})` : 'connecting';
  }
  box.dataset.state = state;
  $('connection-text').textContent = text;
  document.title = state === 'live' ? 'Flux hub' : `Flux hub (${state})`;
}

// ------------------------------------------------------------------------- filter

const filterBox = /** @type {HTMLInputElement} */ ($('filter'));
filterBox.value = hash.get('filter') ?? '';
/** @type {any} */
let filterTimer = null;
const whereBox = /** @type {HTMLInputElement} */ ($('where'));
whereBox.value = hash.get('where') ?? '';
for (const box of [filterBox, whereBox]) {
  box.addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => follow(filterBox.value.trim()), 250);
  });
}

/**
 * A value of the value filter: JSON when it reads as JSON (`5`, `true`, `"5"`), else
 * the text. @param {string} text
 */
function wordValue(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

const WORD_OPS = /** @type {Record<string, string>} */ ({ '=': 'eq', '!=': 'ne', '<': 'lt', '<=': 'lte', '>': 'gt', '>=': 'gte' });

/**
 * The `where` of the value filter box (docs/protocol.md, Value filters), in the
 * command line's words separated by spaces — `status=open load<5 zone in a,b owner?
 * !gone?` — or a JSON object; null when empty.
 * @param {string} text
 * @returns {Record<string, any>|null}
 * @throws {Error} a word in none of these forms
 */
function whereOf(text) {
  if (text === '') return null;
  if (text.startsWith('{')) return JSON.parse(text);
  /** @type {Record<string, Record<string, any>>} */
  const where = {};
  const add = (/** @type {string} */ name, /** @type {string} */ op, /** @type {any} */ value) => {
    where[name] = { ...where[name], [op]: value };
  };
  for (const word of text.replace(/(\S+)\s+in\s+(\S+)/g, '$1\u0000in\u0000$2').split(/\s+/)) {
    let m;
    if ((m = /^([^\u0000]+)\u0000in\u0000(.*)$/.exec(word))) {
      add(m[1], 'in', m[2].split(',').filter((v) => v).map(wordValue));
    } else if ((m = /^(!?)([^\s?]+)\?$/.exec(word))) {
      add(m[2], 'exists', !m[1]);
    } else if ((m = /^([^=<>!?]+)(<=|>=|!=|=|<|>)(.*)$/.exec(word))) {
      add(m[1], WORD_OPS[m[2]], wordValue(m[3]));
    } else {
      throw new Error(`${JSON.stringify(word)}: expected name=value, name!=value, name<5 (<=, >, >=), "name in a,b", name? or !name?`);
    }
  }
  return where;
}

/**
 * The subscription filter of the box's text: a glob when it has `*` or `?`, else an
 * id prefix; empty: everything.
 * @param {string} text
 * @returns {import('./flux-client.js').Filter}
 */
function filterOf(text) {
  if (text === '') return { all: true };
  if (/[*?[]/.test(text)) return { globs: [text] };
  return { prefixes: [text] };
}

/** Follow the entities matching `text` (replacing what was followed). @param {string} text */
function follow(text) {
  const params = new URLSearchParams(location.hash.slice(1));
  if (text) params.set('filter', text);
  else params.delete('filter');
  const whereText = whereBox.value.trim();
  if (whereText) params.set('where', whereText);
  else params.delete('where');
  let where = null;
  try {
    where = whereOf(whereText);
    whereBox.setCustomValidity('');
    whereBox.title = '';
  } catch (error) {
    // Not a filter (yet): say why, and keep following what was followed.
    whereBox.setCustomValidity(String(/** @type {Error} */ (error).message));
    whereBox.title = whereBox.validationMessage;
    return;
  }
  const fragment = params.toString();
  history.replaceState(null, '', fragment ? `#${fragment}` : location.pathname + location.search);

  if (cache) cache.close();
  rows.clear();
  $('entities').querySelector('tbody')?.replaceChildren();
  const next = client.cache(filterOf(text), where ? { where } : {});
  cache = next;
  next.onChange((change) => {
    if (cache !== next) return;
    if (change.type === 'entity') {
      updates += 1;
      dirty.add(change.id);
      // The set of rows changes when an entity comes or goes.
      if (change.entity === null || !rows.has(change.id)) membership = true;
      if (change.id === selected) showDetail(false);
    } else if (change.type === 'reset') {
      rows.clear();
      $('entities').querySelector('tbody')?.replaceChildren();
      membership = true;
    } else if (change.type === 'synced') {
      showConnection();
    }
    scheduleRender();
  });
  next.ready.catch(() => {}).finally(showConnection);
  membership = true;
  scheduleRender();
  showConnection();
}

// ------------------------------------------------------------------------- table

/** @type {Map<string, HTMLTableRowElement>} */
const rows = new Map();
/** @type {Set<string>} ids changed since the last render */
const dirty = new Set();
let membership = true;
/** @type {any} */
let renderTimer = null;

function scheduleRender() {
  if (renderTimer === null) renderTimer = setTimeout(render, 16);
}

function render() {
  renderTimer = null;
  if (!cache) return;
  const tbody = /** @type {HTMLTableSectionElement} */ ($('entities').querySelector('tbody'));
  const ids = [...cache.entities.keys()].sort();
  const shown = ids.slice(0, MAX_ROWS);
  if (membership) {
    // Rebuild the order, reusing the rows that stay.
    const keep = new Set(shown);
    for (const [id, tr] of rows) {
      if (!keep.has(id)) {
        tr.remove();
        rows.delete(id);
      }
    }
    const fragment = document.createDocumentFragment();
    for (const id of shown) {
      let tr = rows.get(id);
      if (!tr) {
        tr = makeRow(id);
        rows.set(id, tr);
        dirty.add(id);
      }
      fragment.append(tr);
    }
    tbody.append(fragment);
    membership = false;
  }
  // Rows flash when they change live, not while the snapshot fills the table.
  const flash = cache.synced;
  for (const id of dirty) {
    const tr = rows.get(id);
    const entity = cache.get(id);
    if (tr && entity) fillRow(tr, entity, flash);
  }
  dirty.clear();
  $('count').textContent = `${ids.length} ${ids.length === 1 ? 'entity' : 'entities'}`;
  $('empty').hidden = ids.length > 0 || !cache.synced;
  const more = $('more');
  more.hidden = ids.length <= MAX_ROWS;
  more.textContent = `Showing the first ${MAX_ROWS} of ${ids.length}: narrow the filter to see others.`;
  $('fig-updates').textContent = formatCount(updates);
}

/** @param {string} id */
function makeRow(id) {
  const tr = document.createElement('tr');
  tr.dataset.id = id;
  tr.tabIndex = 0;
  for (const name of ['id', 'props', 'version num', 'time']) {
    const td = document.createElement('td');
    td.className = name;
    tr.append(td);
  }
  /** @type {HTMLElement} */ (tr.firstChild).textContent = id;
  tr.addEventListener('click', () => select(id));
  tr.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') select(id);
  });
  if (id === selected) tr.classList.add('selected');
  return tr;
}

/**
 * @param {HTMLTableRowElement} tr
 * @param {import('./flux-client.js').Entity} entity
 * @param {boolean} flash
 */
function fillRow(tr, entity, flash) {
  const [idCell, props, version, time] = tr.children;
  showLease(/** @type {HTMLElement} */ (idCell), entity);
  props.textContent = summary(entity.properties);
  props.setAttribute('title', JSON.stringify(entity.properties, null, 1).slice(0, 2000));
  version.textContent = String(entity.version);
  time.textContent = formatTime(entity.lastUpdated);
  time.setAttribute('title', entity.lastUpdated);
  if (flash) {
    // Restart the animation: remove the class, force a style flush, add it again.
    tr.classList.remove('changed');
    void tr.offsetWidth;
    tr.classList.add('changed');
  }
}

/**
 * Under the id of a leased entity, when its lease runs out ("expires in 8s"), counted
 * down by `tickLeases`; nothing for an entity without a lease.
 * @param {HTMLElement} cell
 * @param {import('./flux-client.js').Entity} entity
 */
function showLease(cell, entity) {
  let lease = /** @type {HTMLElement|null} */ (cell.querySelector('.lease'));
  if (!entity.expiresAt) {
    lease?.remove();
    return;
  }
  if (!lease) {
    lease = document.createElement('span');
    lease.className = 'lease';
    cell.append(lease);
  }
  lease.dataset.expiresAt = entity.expiresAt;
  lease.title = `lease deadline: ${entity.expiresAt} (renewed by each event with a ttl)`;
  lease.textContent = formatLease(entity.expiresAt);
}

/** Count the shown leases down, once a second (the cache changes only when they move). */
function tickLeases() {
  for (const lease of document.querySelectorAll('#entities .lease')) {
    const at = /** @type {HTMLElement} */ (lease).dataset.expiresAt;
    if (at) lease.textContent = formatLease(at);
  }
  if (selected && cache?.get(selected)?.expiresAt) showMeta(/** @type {any} */ (cache.get(selected)));
}
setInterval(tickLeases, 1000);

/** @param {Record<string, any>} properties */
function summary(properties) {
  const text = Object.keys(properties)
    .sort()
    .map((k) => `${k}: ${JSON.stringify(properties[k])}`)
    .join(', ');
  return text.length > SUMMARY_CHARS ? `${text.slice(0, SUMMARY_CHARS - 1)}…` : text;
}

// ------------------------------------------------------------------------- detail

/** @type {any} */
let historyTimer = null;
let historyRequest = 0;

/** @param {string} id */
function select(id) {
  if (selected) rows.get(selected)?.classList.remove('selected');
  selected = id;
  rows.get(id)?.classList.add('selected');
  $('detail').hidden = false;
  showDetail(true);
}

function closeDetail() {
  if (selected) rows.get(selected)?.classList.remove('selected');
  selected = null;
  $('detail').hidden = true;
}

$('detail-close').addEventListener('click', closeDetail);
addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && selected) closeDetail();
});

/** @param {boolean} now load the history now (else: after changes settle) */
function showDetail(now) {
  if (!selected) return;
  const entity = cache?.get(selected);
  $('detail-id').textContent = selected;
  if (entity) {
    showMeta(entity);
    $('detail-properties').textContent = JSON.stringify(entity.properties, null, 2);
  } else {
    $('detail-meta').textContent = 'deleted (or no longer matching the filter)';
    $('detail-properties').textContent = '';
  }
  clearTimeout(historyTimer);
  historyTimer = setTimeout(loadHistory, now ? 0 : 300);
}

/** @param {import('./flux-client.js').Entity} entity */
function showMeta(entity) {
  const lease = entity.expiresAt ? ` · ${formatLease(entity.expiresAt)} (${entity.expiresAt})` : '';
  $('detail-meta').textContent = `version ${entity.version} · updated ${entity.lastUpdated}${lease}`;
}

async function loadHistory() {
  const id = selected;
  if (!id) return;
  const request = ++historyRequest;
  const list = $('history');
  const note = $('history-note');
  try {
    const events = await client.history(id, { limit: HISTORY_LIMIT });
    if (request !== historyRequest) return; // a newer request is on its way
    list.replaceChildren(...events.map(historyItem));
    note.textContent = events.length === 0 ? 'No event in the last 24 hours.' : '';
  } catch (error) {
    if (request !== historyRequest) return;
    note.textContent = `History unavailable: ${/** @type {Error} */ (error).message}`;
  }
}

/** @param {Record<string, any>} event */
function historyItem(event) {
  const li = document.createElement('li');
  const head = document.createElement('div');
  head.className = 'muted';
  const when = typeof event.timestamp === 'number' ? new Date(event.timestamp).toISOString() : String(event.timestamp ?? '');
  head.textContent = `${when} · ${event.source ?? '?'} · ${event.stream ?? '?'}`;
  const body = document.createElement('code');
  const properties = event.payload?.properties;
  body.textContent = properties === undefined ? '' : properties === null ? 'deleted' : summary(properties);
  li.append(head, body);
  return li;
}

// ------------------------------------------------------------------------- figures

/**
 * `metrics_update` every FLUX_METRICS_INTERVAL (2 s) on a compat WebSocket. A compat
 * connection gets every state_update unless it subscribes to ids: it subscribes to
 * `flux-core/directory` (changing at most every 2 s), so it carries little else.
 */
function followMetrics() {
  const url = new URL(client.wsUrl);
  if (token) url.searchParams.set('token', token);
  let attempt = 0;
  let lastSeen = 0;

  const open = () => {
    const ws = new WebSocket(url);
    ws.addEventListener('open', () => {
      attempt = 0;
      ws.send(JSON.stringify({ type: 'subscribe', entity_id: 'flux-core/directory' }));
    });
    ws.addEventListener('message', (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message.type !== 'metrics_update') return;
      lastSeen = Date.now();
      showMetrics(message);
    });
    ws.addEventListener('close', () => {
      attempt += 1;
      const full = Math.min(5000, 200 * 2 ** (attempt - 1));
      setTimeout(open, full / 2 + (Math.random() * full) / 2);
    });
  };
  open();
  setInterval(() => {
    $('figures').dataset.stale = String(Date.now() - lastSeen > METRICS_STALE_AFTER);
    const opened = client.stats.openedAt;
    $('fig-uptime').textContent = opened ? formatDuration(Date.now() - opened) : '–';
    $('fig-reconnects').textContent = formatCount(client.stats.disconnects);
  }, 1000);
}

/** @param {Record<string, any>} m a metrics_update message */
function showMetrics(m) {
  $('fig-rate').textContent = formatRate(m.events?.rate_per_second);
  $('fig-entities').textContent = formatCount(m.entities?.total);
  $('fig-events').textContent = formatCount(m.events?.total);
  $('fig-connections').textContent = formatCount(m.websocket?.connections);
  $('fig-publishers').textContent = formatCount(m.publishers?.active);
  $('figures').dataset.stale = 'false';
}

// ------------------------------------------------------------------------- formatting

/** @param {unknown} n */
function formatCount(n) {
  return typeof n === 'number' ? n.toLocaleString('en') : '–';
}

/** @param {unknown} n */
function formatRate(n) {
  if (typeof n !== 'number') return '–';
  return n >= 100 ? Math.round(n).toLocaleString('en') : n.toFixed(n >= 10 ? 1 : 2);
}

/** @param {number} ms */
function formatDuration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/**
 * "expires in 8s", "expires in 2 min 5 s"; "expiring" once the deadline passed (the
 * hub deletes the entity at its next sweep, and the row goes).
 * @param {string} expiresAt
 */
function formatLease(expiresAt) {
  const left = Date.parse(expiresAt) - Date.now();
  if (Number.isNaN(left)) return `expires ${expiresAt}`;
  if (left <= 0) return 'expiring';
  const s = Math.ceil(left / 1000);
  return s < 60 ? `expires in ${s}s` : `expires in ${formatDuration(s * 1000)}`;
}

/** @param {string} iso */
function formatTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const today = new Date().toDateString() === date.toDateString();
  const time = date.toLocaleTimeString('en-GB', { hour12: false });
  return today ? time : `${date.toLocaleDateString('en-CA')} ${time}`;
}

// ------------------------------------------------------------------------- connectors

/** How often the connectors' status is read (`GET /api/connectors`), in ms. */
const CONNECTORS_EVERY = 5000;
/** Characters of a connector's last error shown (the full text in the tooltip). */
const ERROR_CHARS = 120;

/**
 * The connectors' status: Flux's fields (status, last and next poll, last error), and
 * a Singer tap's run figures (state, records of the last run / of all runs). Read
 * every 5 s; in Public mode it needs the page's `#token=`.
 */
async function loadConnectors() {
  const note = $('connectors-note');
  try {
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    const reply = await fetch(new URL('api/connectors', hubUrl), { headers });
    const body = await reply.json();
    if (!reply.ok) throw new Error(body.error ?? `HTTP ${reply.status}`);
    const rows = /** @type {Record<string, any>[]} */ (body.connectors);
    $('connectors-table').querySelector('tbody')?.replaceChildren(...rows.map(connectorRow));
    note.textContent = '';
  } catch (error) {
    note.textContent = `unavailable: ${/** @type {Error} */ (error).message}`;
  }
  setTimeout(loadConnectors, CONNECTORS_EVERY);
}

/** @param {Record<string, any>} c */
function connectorRow(c) {
  const tr = document.createElement('tr');
  tr.dataset.name = c.name;
  tr.dataset.status = c.status;
  const busy = c.state === 'running' || c.state === 'installing' ? ` (${c.state})` : '';
  const records = c.records === undefined ? '' : `${c.records} / ${c.records_total ?? ''}`;
  const error = c.last_error ?? '';
  const cells = [
    c.name,
    c.kind ?? 'builtin',
    `${c.status}${busy}`,
    c.last_poll ? formatTime(c.last_poll) : '',
    records,
    c.next_poll ? formatTime(c.next_poll) : '',
    error.length > ERROR_CHARS ? `${error.slice(0, ERROR_CHARS - 1)}…` : error,
  ];
  for (const [i, text] of cells.entries()) {
    const td = document.createElement('td');
    td.textContent = text;
    if (i === 4) td.className = 'num';
    if (i === 6) td.title = error;
    tr.append(td);
  }
  return tr;
}

// ------------------------------------------------------------------------- start

follow(filterBox.value.trim());
followMetrics();
showConnection();
loadConnectors();

/** For debugging from the console (and for tests): the client and the current cache. */
Object.assign(globalThis, {
  fluxDashboard: {
    client,
    stateLog,
    get cache() {
      return cache;
    },
  },
});

-- The reducer, run atomically by Redis: one call applies a batch of events of one
-- partition, in order. It must agree exactly with hub/core/reducer.py; the tests fold
-- random event sequences through both and compare. Key layout: hub/store/keys.py.
--
-- KEYS: 1 event log, 2 delta log, 3 id index, 4 stats, 5 namespace stats, 6 leases,
--       then per event: entity hash, history list, dedup key
--       (unused ones are given as KEYS[4] so every key stays in the partition's slot)
-- ARGV: 1 now (ms), 2 event-log MAXLEN (0: none), 3 delta-log MAXLEN,
--       4 history entries kept per entity, 5 dedup TTL (s), 6 number of events,
--       7 oldest delta-log id to keep by age ('' : no age limit),
--       then per event: kind (U update, D delete, L log only) followed by the ttl in
--       ms if the event has one (U30000; 0: remove the lease), client eventId or '',
--       if_version or '', stored event JSON, entity id or '', source,
--       number of properties, then name, canonical JSON value for each property
--       (sorted by name).
-- Returns a flat array, four items per event: status ('ok', 'dup', 'conflict'),
--       version, delta-log id or '', event-log id or ''.
-- A delta of an event with a ttl carries the news of the lease in field 'x'
-- (hub/core/lease.py): the new deadline (ms, Redis's clock), or 0: removed.

-- XADD '*' is not deterministic: replicate effects, not the script (a no-op on 7+).
redis.replicate_commands()

local now = ARGV[1]
local event_maxlen = tonumber(ARGV[2])
local delta_maxlen = tonumber(ARGV[3])
local history_cap = tonumber(ARGV[4])
local dedup_ttl = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local delta_minid = ARGV[7]

local function xadd(key, fields)
  return redis.call('XADD', key, '*', unpack(fields))
end

-- The version of a live entity, 0 if it does not exist (or is deleted).
local function live_version(ekey)
  local meta = redis.call('HMGET', ekey, '#v', '#d')
  if meta[1] and not meta[2] then
    return tonumber(meta[1])
  end
  return 0
end

-- Leases (hub/core/lease.py) run on Redis's clock, the one every hub's sweep reads.
-- Sets or removes the lease of a live entity; returns the news its delta carries
-- (field 'x'): the new deadline, 0 when a lease was removed, nil when nothing changed.
local redis_now = nil
local function set_lease(id, ttl)
  if ttl == '0' then
    if redis.call('ZREM', KEYS[6], id) == 1 then
      return 0
    end
    return nil
  end
  if not redis_now then
    local t = redis.call('TIME')
    redis_now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  local deadline = redis_now + tonumber(ttl)
  redis.call('ZADD', KEYS[6], deadline, id)
  return deadline
end

local out = {}
local accepted = 0
-- Sequence number of the partition's last delta: every delta gets the next one, so a
-- reader sees a jump where the log was trimmed before it could read.
local seq = tonumber(redis.call('HGET', KEYS[4], 'deltas') or '0')
local first_seq = seq
local a = 8
local k = 7
-- Per namespace (text before the first '/', '' without one): entities created minus
-- deleted, and whether any was updated; written once per namespace at the end.
local ns_count = {}
local ns_touched = {}
local function namespace_of(id)
  local slash = string.find(id, '/', 1, true)
  if slash then
    return string.sub(id, 1, slash - 1)
  end
  return ''
end
for _ = 1, n do
  local kind, dedup, if_version = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local stored, id, source = ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local np = tonumber(ARGV[a + 6])
  local first = a + 7
  local ttl = ''
  if #kind > 1 then
    ttl = string.sub(kind, 2)
    kind = string.sub(kind, 1, 1)
  end
  a = first + 2 * np
  local ekey, hkey, xkey = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  k = k + 3

  local status, version, dpos, epos = nil, 0, '', ''
  if dedup ~= '' then
    local prior = redis.call('GET', xkey)
    if prior then
      -- prior = "version|delta id|event id" of the first application.
      local v, d, e = string.match(prior, '^([^|]*)|([^|]*)|(.*)$')
      status, version, dpos, epos = 'dup', tonumber(v), d, e
    end
  end
  if not status and if_version ~= '' and id ~= '' then
    local current = live_version(ekey)
    if current ~= tonumber(if_version) then
      status, version = 'conflict', current
    end
  end

  if not status then
    status = 'ok'
    accepted = accepted + 1
    epos = xadd(KEYS[1], {'e', stored})
    if id ~= '' then
      redis.call('LPUSH', hkey, epos)
      redis.call('LTRIM', hkey, 0, history_cap - 1)
    end

    if kind == 'U' then
      local fields = {'#v', '#d'}
      for j = 0, np - 1 do
        fields[j + 3] = '.' .. ARGV[first + 2 * j]
      end
      local old = redis.call('HMGET', ekey, unpack(fields))
      local base = tonumber(old[1] or '0')
      local was_deleted = old[2]
      local created = was_deleted or not old[1]
      local ns = namespace_of(id)
      ns_touched[ns] = true
      if created then
        ns_count[ns] = (ns_count[ns] or 0) + 1
        -- Created (or re-created): index it; a tombstone's version carries on.
        if was_deleted then
          redis.call('HDEL', ekey, '#d')
        end
        redis.call('ZADD', KEYS[3], 0, id)
      end
      seq = seq + 1
      local delta = {'i', id, 'b', base, 'v', 0, 't', now, 's', source, 'n', seq}
      if created then
        delta[#delta + 1] = 'c'
        delta[#delta + 1] = '1'
      end
      local sets = {}
      local changed = 0
      for j = 0, np - 1 do
        local name, value = ARGV[first + 2 * j], ARGV[first + 2 * j + 1]
        local previous = old[j + 3]
        if was_deleted then
          previous = false
        end
        if previous == value then
          delta[#delta + 1] = '~' .. name
        else
          delta[#delta + 1] = '=' .. name
          sets[#sets + 1] = '.' .. name
          sets[#sets + 1] = value
          changed = changed + 1
        end
        delta[#delta + 1] = value
      end
      version = base
      if changed > 0 then
        version = base + 1
      end
      delta[6] = version
      sets[#sets + 1] = '#v'
      sets[#sets + 1] = version
      sets[#sets + 1] = '#t'
      sets[#sets + 1] = now
      redis.call('HSET', ekey, unpack(sets))
      if ttl ~= '' then
        local news = set_lease(id, ttl)
        if news then
          delta[#delta + 1] = 'x'
          delta[#delta + 1] = news
        end
      end
      dpos = xadd(KEYS[2], delta)
    elseif kind == 'D' then
      local base = live_version(ekey)
      if base > 0 then
        version = base + 1
        local ns = namespace_of(id)
        ns_count[ns] = (ns_count[ns] or 0) - 1
        ns_touched[ns] = true
        redis.call('DEL', ekey)
        redis.call('HSET', ekey, '#v', version, '#d', '1', '#t', now)
        redis.call('ZREM', KEYS[3], id)
        redis.call('ZREM', KEYS[6], id)
        seq = seq + 1
        dpos = xadd(KEYS[2],
          {'i', id, 'b', base, 'v', version, 't', now, 's', source, 'n', seq, 'd', '1'})
      end
      -- Deleting what does not exist is a silent no-op (Flux); version stays 0.
    elseif id ~= '' then
      version = live_version(ekey)
      -- Empty properties change nothing but the lease of a live entity: a delta
      -- carries that news alone (lastUpdated stays).
      if ttl ~= '' and version > 0 then
        local news = set_lease(id, ttl)
        if news then
          seq = seq + 1
          dpos = xadd(KEYS[2], {'i', id, 'b', version, 'v', version,
            't', redis.call('HGET', ekey, '#t'), 's', source, 'n', seq, 'x', news})
        end
      end
    end

    if dedup ~= '' then
      redis.call('SET', xkey, version .. '|' .. dpos .. '|' .. epos, 'EX', dedup_ttl)
    end
  end
  out[#out + 1] = status
  out[#out + 1] = tostring(version)
  out[#out + 1] = dpos
  out[#out + 1] = epos
end

if accepted > 0 then
  redis.call('HINCRBY', KEYS[4], 'events', accepted)
  -- Retention, once per call ('~': whole stream nodes only, which is cheap).
  if event_maxlen > 0 then
    redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', event_maxlen)
  end
end
for ns, delta_count in pairs(ns_count) do
  if delta_count ~= 0 then
    redis.call('HINCRBY', KEYS[5], ns, delta_count)
  end
end
for ns, _ in pairs(ns_touched) do
  redis.call('HSET', KEYS[5], ns .. '@', now)
end

if seq > first_seq then
  redis.call('HSET', KEYS[4], 'deltas', seq)
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', delta_maxlen)
  if delta_minid ~= '' then
    redis.call('XTRIM', KEYS[2], 'MINID', '~', delta_minid)
  end
end
return out

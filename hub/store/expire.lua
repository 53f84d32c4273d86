-- The lease sweep (docs/semantics.md, "Leases"; the rules: hub/core/lease.py): deletes
-- the entities of one partition whose lease ran out, at most ARGV[1] of them, oldest
-- deadline first, each exactly as reduce.lua deletes one (event-log tombstone, history,
-- tombstone marker keeping the version, index, namespace count, delta), its delta and
-- its event carrying the reason "expired". Any hub may run it at any time: it reads
-- Redis's clock, and Redis runs it atomically, so two hubs never expire one entity
-- twice, and an entity refreshed before the sweep ran is not due any more.
--
-- KEYS: 1 event log, 2 delta log, 3 id index, 4 stats, 5 namespace stats, 6 leases
-- ARGV: 1 most entities to expire (K), 2 event-log MAXLEN (0: none), 3 delta-log MAXLEN,
--       4 history entries kept per entity, 5 delta-log max age in ms (0: none),
--       6 entity key prefix, 7 history key prefix, 8 source of the tombstone events,
--       then K event ids, one for each tombstone written.
-- Returns: {entities expired, entities still due after this call, Redis time (ms)}.

redis.replicate_commands()

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local event_maxlen = tonumber(ARGV[2])
local delta_maxlen = tonumber(ARGV[3])
local history_cap = tonumber(ARGV[4])
local max_age = tonumber(ARGV[5])
local entity_prefix, history_prefix, source = ARGV[6], ARGV[7], ARGV[8]

local due = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, limit)
if #due == 0 then
  return {0, 0, now}
end

local seq = tonumber(redis.call('HGET', KEYS[4], 'deltas') or '0')
local first_seq = seq
local expired = 0
local ns_count = {}

local function namespace_of(id)
  local slash = string.find(id, '/', 1, true)
  if slash then
    return string.sub(id, 1, slash - 1)
  end
  return ''
end

for j, id in ipairs(due) do
  local ekey = entity_prefix .. id
  local meta = redis.call('HMGET', ekey, '#v', '#d')
  -- The first write is the XADD: a Redis out of memory refuses it (and so the whole
  -- call, with nothing written), where a ZREM first would go through and leave the
  -- entity without its lease.
  -- Invariant: a lease names a live entity (a deletion removes it); checked anyway.
  if not (meta[1] and not meta[2]) then
    redis.call('ZREM', KEYS[6], id)
  else
    local base = tonumber(meta[1])
    local version = base + 1
    local stored = '{"eventId":' .. cjson.encode(ARGV[8 + j])
      .. ',"stream":"flux.events.deletions","source":' .. cjson.encode(source)
      .. ',"timestamp":' .. now .. ',"key":' .. cjson.encode(id)
      .. ',"payload":{"entity_id":' .. cjson.encode(id)
      .. ',"properties":{"__deleted__":true,"__deleted_at__":' .. now
      .. ',"__reason__":"expired"}}}'
    local epos = redis.call('XADD', KEYS[1], '*', 'e', stored)
    local hkey = history_prefix .. id
    redis.call('LPUSH', hkey, epos)
    redis.call('LTRIM', hkey, 0, history_cap - 1)
    redis.call('DEL', ekey)
    redis.call('HSET', ekey, '#v', version, '#d', '1', '#t', now)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[6], id)
    seq = seq + 1
    -- No source in the delta: no publisher made it (the compat metrics_update counts
    -- the sources of deltas as active publishers).
    redis.call('XADD', KEYS[2], '*', 'i', id, 'b', base, 'v', version, 't', now,
      's', '', 'n', seq, 'd', '1', 'r', 'expired')
    local ns = namespace_of(id)
    ns_count[ns] = (ns_count[ns] or 0) - 1
    expired = expired + 1
  end
end

if expired > 0 then
  redis.call('HINCRBY', KEYS[4], 'events', expired)
  if event_maxlen > 0 then
    redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', event_maxlen)
  end
  for ns, delta_count in pairs(ns_count) do
    redis.call('HINCRBY', KEYS[5], ns, delta_count)
    redis.call('HSET', KEYS[5], ns .. '@', now)
  end
end
if seq > first_seq then
  redis.call('HSET', KEYS[4], 'deltas', seq)
  redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', delta_maxlen)
  if max_age > 0 then
    redis.call('XTRIM', KEYS[2], 'MINID', '~', (now - max_age) .. '-0')
  end
end
return {expired, redis.call('ZCOUNT', KEYS[6], '-inf', now), now}

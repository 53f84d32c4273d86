-- A snapshot page, read atomically with the delta-log head, so that the page shows
-- its entities exactly as of that position (see hub/core/handoff.py); also every
-- read of entities by id (REST, get, list), for the deadline of their leases.
--
-- KEYS: 1 id index, 2 delta log, 3 leases (of one partition)
-- ARGV: 1 entity key prefix ("<prefix>:{p}:e:"), 2 mode:
--         'range': 3 low (ZRANGEBYLEX syntax), 4 high, 5 limit
--         'ids':   3.. entity ids
-- Returns: {delta-log head id or '0-0', ids read (number),
--           then per id read: id, {hash field, value, ...}}
--   where an entity that holds a lease has one more pair: '#x', its deadline (ms),
--   read in the same call: of the same incarnation as the state.
-- Entity keys share the partition's hash tag with KEYS, so they live in its slot.

local head = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local out = {head[1] and head[1][1] or '0-0', 0}
local ids
if ARGV[2] == 'range' then
  ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[3], ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
else
  ids = {}
  for i = 3, #ARGV do
    ids[#ids + 1] = ARGV[i]
  end
end
out[2] = #ids
if #ids == 0 then
  return out
end
-- ZMSCORE by 1,000 ids: Lua's unpack() has a bound (8,000 values).
local deadlines = {}
for first = 1, #ids, 1000 do
  local got = redis.call('ZMSCORE', KEYS[3], unpack(ids, first, math.min(first + 999, #ids)))
  for j = 1, #got do
    deadlines[first + j - 1] = got[j]
  end
end
for i, id in ipairs(ids) do
  local fields = redis.call('HGETALL', ARGV[1] .. id)
  if deadlines[i] then
    fields[#fields + 1] = '#x'
    fields[#fields + 1] = deadlines[i]
  end
  out[#out + 1] = id
  out[#out + 1] = fields
end
return out

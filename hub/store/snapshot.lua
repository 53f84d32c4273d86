-- A snapshot page, read atomically with the delta-log head, so that the page shows
-- its entities exactly as of that position (see hub/core/handoff.py).
--
-- KEYS: 1 id index, 2 delta log (of one partition)
-- ARGV: 1 entity key prefix ("<prefix>:{p}:e:"), 2 mode:
--         'range': 3 low (ZRANGEBYLEX syntax), 4 high, 5 limit
--         'ids':   3.. entity ids
-- Returns: {delta-log head id or '0-0', ids read (number),
--           then per live entity: id, {hash field, value, ...}}
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
for _, id in ipairs(ids) do
  local fields = redis.call('HGETALL', ARGV[1] .. id)
  out[#out + 1] = id
  out[#out + 1] = fields
end
return out

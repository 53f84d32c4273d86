-- A token bucket per namespace, shared by every hub (Flux's algorithm): capacity L
-- (the per-minute limit), starting full, refilling L/60 tokens per second, capped at L.
-- Time is Redis's own clock, so hubs with skewed clocks agree.
--
-- KEYS: 1 the bucket (hash: tokens, ms)
-- ARGV: 1 L, 2 tokens wanted (events)
-- Returns: {tokens granted (0..wanted), ms until one more token is available}

redis.replicate_commands()

local limit = tonumber(ARGV[1])
local wanted = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil then
  tokens = limit
else
  tokens = math.min(limit, tokens + (now - last) * limit / 60000)
end
local granted = math.min(wanted, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', now)
-- A bucket refills completely in 60 s: after that it is as good as new.
redis.call('PEXPIRE', KEYS[1], 61000)
local wait = 0
if tokens < 1 then
  wait = math.ceil((1 - tokens) * 60000 / limit)
end
return {granted, wait}

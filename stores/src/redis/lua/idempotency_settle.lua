-- Completes (ARGV[2] = 'C') or abandons (ARGV[2] = 'A') the pending claim of one order; a claim
-- another request has taken over since is left alone.
-- KEYS[1] = the key; ARGV[1] = order id, ARGV[3] = ttl of a completed key (ms)
local value = redis.call('GET', KEYS[1])
if not value then
  return 0
end
local kind, _, order, fingerprint = string.match(value, '^(%a)|(%d+)|([^|]+)|(.*)$')
if kind ~= 'P' or order ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'C' then
  redis.call('SET', KEYS[1], 'C|0|' .. order .. '|' .. fingerprint, 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], 'P|0|' .. order .. '|' .. fingerprint, 'KEEPTTL')
end
return 1

-- Stores an order's hot view unless a newer one is there already.
-- KEYS[1] = {wh}:view:ORDER; ARGV[1] = version, ARGV[2] = view JSON, ARGV[3] = ttl (ms)
-- Returns 1 if stored.
local current = redis.call('HGET', KEYS[1], 'v')
if current and tonumber(current) > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'view', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1

-- Sets available; initial follows so that initial = available + reserved + committed.
-- KEYS[1] = {wh}:skus, KEYS[2] = {wh}:stock:SKU; ARGV[1] = SKU, ARGV[2] = available
-- Returns {initial, available, reserved, committed} as strings.
local reserved = redis.call('HGET', KEYS[2], 'reserved') or '0'
local committed = redis.call('HGET', KEYS[2], 'committed') or '0'
redis.call('HSET', KEYS[2], 'available', ARGV[2], 'reserved', reserved, 'committed', committed,
  'initial', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'initial', reserved)
local initial = redis.call('HINCRBY', KEYS[2], 'initial', committed)
redis.call('SADD', KEYS[1], ARGV[1])
return { tostring(initial), ARGV[2], reserved, committed }

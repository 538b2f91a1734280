-- Returns a held order's units to available (compensation). Idempotent.
-- KEYS[1] = {wh}:hold:ORDER, KEYS[2] = {wh}:expiry
-- ARGV[1] = order id, ARGV[2] = stock key prefix '{wh}:stock:', ARGV[3] = retention (ms)
-- Returns 1 if the stock is released (now or before, also by expiry or a cancel), 0 if there
-- is no hold or it was committed.
local hold = redis.call('HMGET', KEYS[1], 'state', 'lines')
local state = hold[1]
if state == 'released' or state == 'expired' or state == 'cancelled' then
  return 1
end
if state ~= 'held' then
  return 0
end
local lines = cjson.decode(hold[2])
for i = 1, #lines, 2 do
  local key = ARGV[2] .. lines[i]
  redis.call('HINCRBY', key, 'reserved', 0 - tonumber(lines[i + 1]))
  redis.call('HINCRBY', key, 'available', lines[i + 1])
end
redis.call('HSET', KEYS[1], 'state', 'released')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1

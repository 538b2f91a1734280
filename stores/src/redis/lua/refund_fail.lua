-- Gives a refund the provider refused for good back to the capture, once.
-- KEYS[1] = {wh}:refunds:ORDER; ARGV[1] = refund id
-- Returns 1 if its amount no longer counts (by this call), else 0.
local key = redis.call('HGET', KEYS[1], 'id:' .. ARGV[1])
if not key then
  return 0
end
if redis.call('HSETNX', KEYS[1], 'failed:' .. ARGV[1], '1') == 0 then
  return 0
end
local record = cjson.decode(redis.call('HGET', KEYS[1], 'key:' .. key))
redis.call('HINCRBY', KEYS[1], 'total', 0 - tonumber(record[2]))
return 1

-- Releases holds whose expiry has passed unless they are pinned or settled, marks them expired
-- and queues them for announcement; returns up to ARGV[2] orders whose expiry is still to be
-- announced.
-- KEYS[1] = {wh}:expiry, KEYS[2] = {wh}:expired
-- ARGV[1] = now (ms since the epoch), ARGV[2] = limit, ARGV[3] = key prefix '{wh}:'
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, order in ipairs(due) do
  local hold = ARGV[3] .. 'hold:' .. order
  if redis.call('HGET', hold, 'state') == 'held' and redis.call('HGET', hold, 'pinned') ~= '1' then
    local lines = cjson.decode(redis.call('HGET', hold, 'lines'))
    for i = 1, #lines, 2 do
      local key = ARGV[3] .. 'stock:' .. lines[i]
      redis.call('HINCRBY', key, 'reserved', 0 - tonumber(lines[i + 1]))
      redis.call('HINCRBY', key, 'available', lines[i + 1])
    end
    redis.call('HSET', hold, 'state', 'expired')
    -- The record stays until the expiry is announced; acknowledging it sets its retention.
    redis.call('SADD', KEYS[2], order)
  end
  redis.call('ZREM', KEYS[1], order)
end
return redis.call('SRANDMEMBER', KEYS[2], ARGV[2])

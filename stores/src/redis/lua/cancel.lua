-- Cancels an order unless it shipped or was refused first; releases a held order's units. A
-- repeat answers the same. An order with no hold yet is marked, so its reservation is refused.
-- A cancelled record never expires: an order dead-lettered before its reservation and replayed
-- any time later must still find it cancelled.
-- KEYS[1] = {wh}:hold:ORDER, KEYS[2] = {wh}:expiry
-- ARGV[1] = order id, ARGV[2] = stock key prefix '{wh}:stock:'
-- Returns 'cancelled', 'shipped' or 'rejected'.
local hold = redis.call('HMGET', KEYS[1], 'state', 'lines')
local state = hold[1]
if state == 'cancelled' then
  return 'cancelled'
end
if state == 'committed' then
  return 'shipped'
end
if state == 'held' then
  local lines = cjson.decode(hold[2])
  for i = 1, #lines, 2 do
    local key = ARGV[2] .. lines[i]
    redis.call('HINCRBY', key, 'reserved', 0 - tonumber(lines[i + 1]))
    redis.call('HINCRBY', key, 'available', lines[i + 1])
  end
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('PERSIST', KEYS[1])
  return 'cancelled'
end
if state then
  -- refused, released (a decline or a rejection after pricing) or expired
  return 'rejected'
end
redis.call('HSET', KEYS[1], 'state', 'cancelled')
return 'cancelled'

-- Records that an order with no hold is refused before any reservation, so a later cancel
-- answers 'rejected'. KEYS[1] = {wh}:hold:ORDER; ARGV[1] = retention (ms)
-- Returns 0 if the order was cancelled first (it must end cancelled), else 1.
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'cancelled' then
  return 0
end
if not state then
  redis.call('HSET', KEYS[1], 'state', 'refused', 'outcome', '[]')
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1

-- Marks expiries announced: drops them from the to-announce set and gives their hold records
-- their retention. Only holds that are really expired are touched.
-- KEYS[1] = {wh}:expired; ARGV[1] = key prefix '{wh}:', ARGV[2] = retention (ms),
--   ARGV[3..] = order ids
for i = 3, #ARGV do
  local hold = ARGV[1] .. 'hold:' .. ARGV[i]
  if redis.call('HGET', hold, 'state') == 'expired' then
    redis.call('SREM', KEYS[1], ARGV[i])
    redis.call('PEXPIRE', hold, ARGV[2])
  end
end
return 0

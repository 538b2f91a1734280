-- Exempts a held order from expiry before it is charged. Idempotent.
-- KEYS[1] = {wh}:hold:ORDER, KEYS[2] = {wh}:expiry (unused; kept so every hold call names the
--   same keys); ARGV[1] = order id
-- Returns 'pinned', 'expired', 'released' (pinned, then released: a charge was decided),
-- 'cancelled' or 'missing'.
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'held' then
  -- The order stays in the expiry set: the sweeper skips pinned holds (and drops them from
  -- the set), and commit or release removes it, so no ZREM is spent here.
  redis.call('HSET', KEYS[1], 'pinned', '1')
  return 'pinned'
end
if state == 'committed' then
  return 'pinned'
end
if state == 'expired' then
  return 'expired'
end
if state == 'cancelled' then
  return 'cancelled'
end
if state == 'released' and redis.call('HGET', KEYS[1], 'pinned') == '1' then
  return 'released'
end
return 'missing'

-- Redeems a promotion for one order within its limits; a repeat for the order returns the
-- first answer.
-- KEYS[1] = {coupon:ID}:uses, KEYS[2] = {coupon:ID}:order:ORDER,
-- KEYS[3] = {coupon:ID}:customer:CUSTOMER
-- ARGV[1] = total limit ('' = none), ARGV[2] = how long the order's answer is remembered (ms):
--   it must outlive every redelivery and dead-letter replay of the order, or a use could be
--   counted twice; ARGV[3] = per-customer limit ('' = none)
-- Returns 'redeemed' or 'exhausted'.
local first = redis.call('GET', KEYS[2])
if first == 'redeemed' or first == 'exhausted' then
  return first
end
-- A use given back ('restored') is taken again only if there is room.
local uses = tonumber(redis.call('GET', KEYS[1]) or '0')
local mine = tonumber(redis.call('GET', KEYS[3]) or '0')
local answer = 'redeemed'
if ARGV[1] ~= '' and uses >= tonumber(ARGV[1]) then
  answer = 'exhausted'
end
if ARGV[3] ~= '' and mine >= tonumber(ARGV[3]) then
  answer = 'exhausted'
end
if answer == 'redeemed' then
  redis.call('INCR', KEYS[1])
  redis.call('INCR', KEYS[3])
end
redis.call('SET', KEYS[2], answer, 'PX', ARGV[2])
return answer

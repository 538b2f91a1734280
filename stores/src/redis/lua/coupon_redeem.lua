-- Redeems a coupon for one order within its limit; a repeat for the order returns the first
-- answer.
-- KEYS[1] = {coupon:CODE}:uses, KEYS[2] = {coupon:CODE}:order:ORDER
-- ARGV[1] = limit, ARGV[2] = how long the order's answer is remembered (ms): it must outlive
--   every redelivery and dead-letter replay of the order, or a use could be counted twice
-- Returns 'redeemed' or 'exhausted'.
local first = redis.call('GET', KEYS[2])
if first == 'redeemed' or first == 'exhausted' then
  return first
end
if first == 'restored' then
  -- A use given back is taken again only if there is room.
  first = nil
end
local uses = tonumber(redis.call('GET', KEYS[1]) or '0')
local answer = 'exhausted'
if uses < tonumber(ARGV[1]) then
  redis.call('INCR', KEYS[1])
  answer = 'redeemed'
end
redis.call('SET', KEYS[2], answer, 'PX', ARGV[2])
return answer

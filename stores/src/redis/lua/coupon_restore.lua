-- Gives an order's promotion use back (its order was rejected after pricing), in all and for
-- its customer. Idempotent.
-- KEYS[1] = {coupon:ID}:uses, KEYS[2] = {coupon:ID}:order:ORDER,
-- KEYS[3] = {coupon:ID}:customer:CUSTOMER; ARGV[1] = retention (ms)
-- Returns 1 if a use was given back now.
if redis.call('GET', KEYS[2]) ~= 'redeemed' then
  return 0
end
redis.call('DECR', KEYS[1])
if tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then
  redis.call('DECR', KEYS[3])
end
redis.call('SET', KEYS[2], 'restored', 'PX', ARGV[1])
return 1

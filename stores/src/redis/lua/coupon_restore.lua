-- Gives an order's coupon use back (its order was rejected after pricing). Idempotent.
-- KEYS[1] = {coupon:CODE}:uses, KEYS[2] = {coupon:CODE}:order:ORDER; ARGV[1] = retention (ms)
-- Returns 1 if a use was given back now.
if redis.call('GET', KEYS[2]) ~= 'redeemed' then
  return 0
end
redis.call('DECR', KEYS[1])
redis.call('SET', KEYS[2], 'restored', 'PX', ARGV[1])
return 1

-- Claims an Idempotency-Key that SET NX found taken: the caller's request takes over a lapsed
-- or abandoned claim of the same body (keeping its order id), otherwise it learns the holder.
-- KEYS[1] = the key; ARGV[1] = fingerprint, ARGV[2] = proposed order id, ARGV[3] = now (ms),
--   ARGV[4] = pending ttl (ms), ARGV[5] = how long a lapsed claim is kept (ms)
-- The value is 'P|deadline|order|fingerprint' (pending) or 'C|0|order|fingerprint' (complete).
-- Returns {'claimed', order} or {'existing', order, fingerprint, 'P' | 'C'}.
local value = redis.call('GET', KEYS[1])
if not value then
  redis.call('SET', KEYS[1], 'P|' .. (tonumber(ARGV[3]) + tonumber(ARGV[4])) .. '|' .. ARGV[2]
    .. '|' .. ARGV[1], 'PX', tonumber(ARGV[4]) + tonumber(ARGV[5]))
  return { 'claimed', ARGV[2] }
end
local kind, deadline, order, fingerprint = string.match(value, '^(%a)|(%d+)|([^|]+)|(.*)$')
if kind == 'P' and fingerprint == ARGV[1] and tonumber(deadline) <= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], 'P|' .. (tonumber(ARGV[3]) + tonumber(ARGV[4])) .. '|' .. order
    .. '|' .. fingerprint, 'PX', tonumber(ARGV[4]) + tonumber(ARGV[5]))
  return { 'claimed', order }
end
return { 'existing', order or '', fingerprint or '', kind or '?' }

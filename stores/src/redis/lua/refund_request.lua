-- Counts a refund against an order's capture, once per idempotency key, never past the capture.
-- KEYS[1] = {wh}:refunds:ORDER, KEYS[2] = {wh}:refunds (the orders with refunds, for audits)
-- ARGV[1] = order id, ARGV[2] = idempotency key, ARGV[3] = refund id, ARGV[4] = amount in minor
--   units ('' = all that is left), ARGV[5] = currency, ARGV[6] = reason, ARGV[7] = captured
-- Returns {'repeat', RECORD} for a known key, {'accepted', RECORD}, {'exceeds', REFUNDED} or
-- {'nothing', REFUNDED} (all that is left was asked for and nothing is); RECORD is the JSON
-- array [refund id, amount, currency, reason].
local known = redis.call('HGET', KEYS[1], 'key:' .. ARGV[2])
if known then
  return { 'repeat', known }
end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
local captured = tonumber(ARGV[7])
local amount
if ARGV[4] == '' then
  amount = captured - total
  if amount <= 0 then
    return { 'nothing', string.format('%d', total) }
  end
else
  amount = tonumber(ARGV[4])
end
if total + amount > captured then
  return { 'exceeds', string.format('%d', total) }
end
-- string.format, not tostring: Lua's numbers are doubles, which tostring writes as 1e+14.
local record = cjson.encode({ ARGV[3], string.format('%d', amount), ARGV[5], ARGV[6] })
redis.call('HSET', KEYS[1], 'key:' .. ARGV[2], record, 'total', string.format('%d', total + amount),
  'id:' .. ARGV[3], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return { 'accepted', record }

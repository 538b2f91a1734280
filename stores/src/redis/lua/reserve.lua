-- Reserves every line of one order, all or nothing. A repeat for the same order returns the
-- first answer and changes nothing.
-- KEYS[1] = {wh}:hold:ORDER, KEYS[2] = {wh}:expiry, KEYS[3..2+n] = {wh}:stock:SKU, one per SKU
-- ARGV[1] = order id, ARGV[2] = expires at (ms since the epoch), ARGV[3] = how long a refusal is
--   remembered (ms), ARGV[4..3+n] = the SKUs, ARGV[4+n..3+2n] = units per SKU, in KEYS order
-- Returns 'R' when reserved, 'C' when the order was cancelled, else a JSON array of shortages
-- [[sku, requested, available], ...].
local first = redis.call('HMGET', KEYS[1], 'state', 'outcome')
if first[1] == 'cancelled' then
  return 'C'
end
if first[2] then
  return first[2]
end
local n = #KEYS - 2
local short = {}
for i = 1, n do
  local need = ARGV[3 + n + i]
  local available = redis.call('HGET', KEYS[2 + i], 'available')
  if not available or tonumber(available) < tonumber(need) then
    short[#short + 1] = { ARGV[3 + i], need, available or '0' }
  end
end
if #short > 0 then
  local outcome = cjson.encode(short)
  redis.call('HSET', KEYS[1], 'state', 'refused', 'outcome', outcome)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return outcome
end
-- (0 - x, not -x: a Lua -0 reaches Redis as "-0", which HINCRBY refuses.)
local lines = {}
for i = 1, n do
  local need = ARGV[3 + n + i]
  redis.call('HINCRBY', KEYS[2 + i], 'available', 0 - tonumber(need))
  redis.call('HINCRBY', KEYS[2 + i], 'reserved', need)
  lines[#lines + 1] = ARGV[3 + i]
  lines[#lines + 1] = need
end
redis.call('HSET', KEYS[1], 'state', 'held', 'outcome', 'R', 'lines', cjson.encode(lines),
  'expires', ARGV[2], 'pinned', '0')
-- No key expiry on a live hold: only the sweeper may end it, because only it returns the stock.
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 'R'

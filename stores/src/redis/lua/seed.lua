-- Creates the SKUs that have no level yet with available = initial = stock.
-- KEYS[1] = {wh}:skus, KEYS[2..] = {wh}:stock:SKU; ARGV[1..] = the SKUs, then the stocks
-- Returns how many were created.
local n = #KEYS - 1
local created = 0
for i = 1, n do
  if redis.call('EXISTS', KEYS[1 + i]) == 0 then
    redis.call('HSET', KEYS[1 + i], 'initial', ARGV[n + i], 'available', ARGV[n + i],
      'reserved', 0, 'committed', 0)
    redis.call('SADD', KEYS[1], ARGV[i])
    created = created + 1
  end
end
return created

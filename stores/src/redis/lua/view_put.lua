-- Stores each order's hot view unless a newer one is there already.
-- KEYS[1..n] = hotview:ORDER, all in one hash slot
-- ARGV[1] = ttl (ms), ARGV[2i] = the i-th view's version, ARGV[2i + 1] = its value
--   'VERSION|JSON'
-- Returns how many were stored.
local stored = 0
for i = 1, #KEYS do
  -- Only the head of the value: the version, at most 10 digits and the bar.
  local head = redis.call('GETRANGE', KEYS[i], 0, 11)
  local held = tonumber(string.match(head, '^(%d+)|'))
  if not held or held <= tonumber(ARGV[2 * i]) then
    redis.call('SET', KEYS[i], ARGV[2 * i + 1], 'PX', ARGV[1])
    stored = stored + 1
  end
end
return stored

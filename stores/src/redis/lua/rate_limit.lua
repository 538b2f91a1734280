-- Takes one request from a key's budget (GCRA: a steady rate with a burst allowance).
-- KEYS[1] = {rl:KEY}; ARGV[1] = µs per request, ARGV[2] = burst (requests allowed at once)
-- Time is Redis's own, so every ingest replica measures against the same clock.
-- Returns 0 when allowed, else how many ms to wait before asking again.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local allowance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then
  tat = now
end
local next_tat = tat + interval
if next_tat - now > allowance then
  return math.ceil((next_tat - now - allowance) / 1000)
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX',
  math.ceil((next_tat - now) / 1000) + 1)
return 0

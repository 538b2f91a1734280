-- Takes one request from a key's budget (GCRA: a steady rate with a burst allowance).
-- KEYS[1] = {rl:KEY}; ARGV[1] = now (µs), ARGV[2] = µs per request, ARGV[3] = burst
-- Returns 0 when allowed, else how many ms to wait before asking again.
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local allowance = interval * tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
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

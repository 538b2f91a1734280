-- wrk body script: POST realistic checkouts with a bearer token (TOKEN env var), rotating over
-- a few baskets of SKUs that have stock in the load-test catalog (run.sh writes it).
--
-- RATE (optional): requests per second per wrk thread, paced on a fixed schedule: each request
-- takes the next slot of the schedule and waits for it, so the offered load stays constant
-- however fast the server answers (wrk alone sends as fast as it can). Give wrk enough
-- connections that one is always free at that rate (RATE × expected latency, with headroom).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "")
-- ORIGIN (optional): send it as a browser storefront would, so CORS answers every request.
if os.getenv("ORIGIN") and os.getenv("ORIGIN") ~= "" then
  wrk.headers["Origin"] = os.getenv("ORIGIN")
end

local address = '"shipping_address":{"name":"Load Test","line1":"1 Main St","city":"San Francisco",' ..
  '"region":"CA","postal_code":"94107","country":"US"}'
local baskets = {
  '[{"sku":"SKU-0001","quantity":1}]',
  '[{"sku":"SKU-0002","quantity":1},{"sku":"SKU-0017","quantity":2}]',
  '[{"sku":"SKU-0003","quantity":2}]',
  '[{"sku":"SKU-0005","quantity":1},{"sku":"SKU-0042","quantity":1}]',
  '[{"sku":"SKU-0023","quantity":1}]',
}
local bodies = {}
for i, lines in ipairs(baskets) do
  bodies[i] = '{"currency":"USD","lines":' .. lines .. ',' .. address ..
    ',"coupon_codes":[],"payment":{"token":"tok_visa"}}'
end
local n = 0

request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])
end

local rate = tonumber(os.getenv("RATE") or "")
if rate and rate > 0 then
  -- wrk's LuaJIT has no wall clock in milliseconds; ask libc for one.
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_usec; } wrk_timeval;
    int gettimeofday(wrk_timeval *tv, void *tz);
  ]]
  local tv = ffi.new("wrk_timeval")
  local function now_ms()
    ffi.C.gettimeofday(tv, nil)
    return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
  end
  local period = 1000 / rate
  local next_at = nil
  delay = function()
    local now = now_ms()
    -- A schedule that fell behind (the server was slow) catches up at once, but never banks
    -- more than a second of missed slots.
    next_at = math.max((next_at or now) + period, now - 1000)
    local wait = next_at - now
    if wait < 0 then return 0 end
    return math.floor(wait)
  end
end

-- errors counts non-2xx answers too, so a report never mistakes fast errors for throughput.
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format("wrk_summary requests=%d duration_s=%.3f rps=%.1f ok_rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests, seconds, summary.requests / seconds, (summary.requests - errors) / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errors))
end

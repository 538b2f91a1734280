-- wrk body script: POST realistic checkouts with a bearer token (TOKEN env var), rotating over
-- a few baskets of SKUs that have stock in the load-test catalog (run.sh writes it).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "")

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

-- errors counts non-2xx answers too, so a report never mistakes fast errors for throughput.
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format("wrk_summary requests=%d duration_s=%.3f rps=%.1f ok_rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests, seconds, summary.requests / seconds, (summary.requests - errors) / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errors))
end

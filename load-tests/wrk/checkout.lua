-- wrk body script: POST one realistic checkout with a bearer token (TOKEN env var).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TOKEN") or "")
wrk.body = '{"currency":"USD","lines":[{"sku":"SKU-0002","quantity":1},{"sku":"SKU-0017","quantity":2}],' ..
  '"shipping_address":{"name":"Load Test","line1":"1 Main St","city":"San Francisco","region":"CA",' ..
  '"postal_code":"94107","country":"US"},"coupon_codes":[],"payment":{"token":"tok_visa"}}'

-- errors counts non-2xx answers too, so a report never mistakes fast errors for throughput.
done = function(summary, latency, requests)
  io.write(string.format("wrk_summary requests=%d duration_s=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end

// Shared by every scenario: where to send, whose tokens, and what a realistic checkout is.
import http from 'k6/http';

export const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
// Tokens of many customers, minted by `orderflow token` (load-tests/run.sh passes them).
const TOKENS = (__ENV.TOKENS || '').split(',').filter((t) => t.length > 0);

export function token() {
  return TOKENS[Math.floor(Math.random() * TOKENS.length)];
}

// A peak-day basket: most lines hit a few hot SKUs (which sell out during a run, so some
// orders end out_of_stock), the rest spread over the catalog; some payments decline, some
// fail transiently, some orders carry a coupon.
const HOT = ['SKU-0001', 'SKU-0002', 'SKU-0003', 'SKU-0004', 'SKU-0005'];

function sku() {
  if (Math.random() < 0.8) {
    return HOT[Math.floor(Math.random() * HOT.length)];
  }
  const n = 6 + Math.floor(Math.random() * 55);
  return `SKU-${String(n).padStart(4, '0')}`;
}

function paymentToken() {
  const r = Math.random();
  if (r < 0.05) return 'tok_decline';
  if (r < 0.07) return 'tok_flaky';
  return 'tok_visa';
}

export function body() {
  const lines = [];
  const count = Math.random() < 0.7 ? 1 : 2 + Math.floor(Math.random() * 2);
  const seen = new Set();
  for (let i = 0; i < count; i++) {
    const s = sku();
    if (seen.has(s)) continue;
    seen.add(s);
    lines.push({ sku: s, quantity: 1 + Math.floor(Math.random() * 2) });
  }
  return JSON.stringify({
    currency: 'USD',
    lines,
    shipping_address: {
      name: 'Load Test', line1: '1 Main St', city: 'San Francisco', region: 'CA',
      postal_code: '94107', country: 'US',
    },
    coupon_codes: Math.random() < 0.1 ? ['WELCOME10'] : [],
    payment: { token: paymentToken() },
  });
}

export function checkout(tok) {
  return http.post(`${BASE}/v1/checkouts`, body(), {
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${tok}` },
    tags: { name: 'checkout' },
  });
}

export function getOrder(id, tok) {
  // A 404 right after the 202 is expected: the projector shows an order a moment later.
  return http.get(`${BASE}/v1/orders/${id}`, {
    headers: { Authorization: `Bearer ${tok}` },
    tags: { name: 'order' },
    responseCallback: http.expectedStatuses(200, 404),
  });
}

export const SUMMARY_STATS = ['avg', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'];

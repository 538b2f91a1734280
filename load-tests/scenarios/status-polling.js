// status-polling: customers refreshing their order page: a constant rate of GET
// /v1/orders/{id} over orders placed in setup. RATE, DURATION, ORDERS.
import { check } from 'k6';
import { checkout, getOrder, token, SUMMARY_STATS } from './common.js';

const RATE = Number(__ENV.RATE || 3000);

export const options = {
  scenarios: {
    polling: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: Math.max(50, Math.ceil(RATE / 20)),
      maxVUs: 1000,
    },
  },
  thresholds: {
    'http_req_duration{name:order}': [`p(99)<${__ENV.P99_MS || 20}`],
    http_req_failed: ['rate<0.01'],
  },
  summaryTrendStats: SUMMARY_STATS,
};

export function setup() {
  const orders = [];
  for (let i = 0; i < Number(__ENV.ORDERS || 300); i++) {
    const tok = token();
    const r = checkout(tok);
    if (r.status === 202) orders.push([r.json('order_id'), tok]);
  }
  return { orders };
}

export default function (data) {
  const [id, tok] = data.orders[Math.floor(Math.random() * data.orders.length)];
  const r = getOrder(id, tok);
  check(r, { 'found (200)': (res) => res.status === 200 });
}

// checkout: a constant arrival rate of checkouts; thresholds on p99 and the error rate.
// RATE (per second), DURATION, P99_MS.
import { check } from 'k6';
import { checkout, token, SUMMARY_STATS } from './common.js';

const RATE = Number(__ENV.RATE || 2000);

export const options = {
  scenarios: {
    checkout: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: Math.min(1000, Math.max(50, Math.ceil(RATE / 20))),
      maxVUs: 2000,
    },
  },
  thresholds: {
    'http_req_duration{name:checkout}': [`p(99)<${__ENV.P99_MS || 20}`],
    http_req_failed: ['rate<0.01'],
  },
  summaryTrendStats: SUMMARY_STATS,
};

export default function () {
  const r = checkout(token());
  check(r, { 'accepted (202)': (res) => res.status === 202 });
}

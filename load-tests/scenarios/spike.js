// spike: a quiet store, a sudden rush (a drop goes live), back to quiet. LOW and HIGH are
// checkouts per second.
import { check } from 'k6';
import { checkout, token, SUMMARY_STATS } from './common.js';

const LOW = Number(__ENV.LOW || 200);
const HIGH = Number(__ENV.HIGH || 3000);

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: LOW,
      timeUnit: '1s',
      preAllocatedVUs: Math.max(100, Math.ceil(HIGH / 10)),
      maxVUs: 3000,
      stages: [
        { target: LOW, duration: '10s' },
        { target: HIGH, duration: '5s' },
        { target: HIGH, duration: '20s' },
        { target: LOW, duration: '5s' },
        { target: LOW, duration: '15s' },
      ],
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:checkout}': [`p(99)<${__ENV.P99_MS || 250}`],
  },
  summaryTrendStats: SUMMARY_STATS,
};

export default function () {
  const r = checkout(token());
  check(r, { 'accepted (202)': (res) => res.status === 202 });
}

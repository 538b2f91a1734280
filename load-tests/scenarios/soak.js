// soak: a steady load for a long time (DURATION, 10 minutes by default) to show memory stays
// flat; run.sh samples the server's RSS every second.
import { check } from 'k6';
import { checkout, token, SUMMARY_STATS } from './common.js';

const RATE = Number(__ENV.RATE || 1000);

export const options = {
  scenarios: {
    soak: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '10m',
      preAllocatedVUs: Math.max(50, Math.ceil(RATE / 20)),
      maxVUs: 1000,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{name:checkout}': [`p(99)<${__ENV.P99_MS || 50}`],
  },
  summaryTrendStats: SUMMARY_STATS,
};

export default function () {
  const r = checkout(token());
  check(r, { 'accepted (202)': (res) => res.status === 202 });
}

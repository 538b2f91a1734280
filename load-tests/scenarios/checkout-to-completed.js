// checkout-to-completed: places each order, then follows it to its terminal state: most by
// polling GET /v1/orders/{id} every 100 ms (so figures carry up to 100 ms of polling delay),
// a share (WS_SHARE) over the WebSocket. Trends: accept→terminal.
// RATE, DURATION, WS_SHARE.
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import ws from 'k6/ws';
import { BASE, checkout, getOrder, token, SUMMARY_STATS } from './common.js';

const RATE = Number(__ENV.RATE || 500);
const WS_SHARE = Number(__ENV.WS_SHARE || 0.1);
const polled = new Trend('accept_to_terminal_polled', true);
const followed = new Trend('accept_to_terminal_ws', true);
// DESIGN.md's target is accept→completed: completed orders only, followed over the WebSocket.
const completed = new Trend('accept_to_completed_ws', true);
const outcomes = new Counter('orders_by_outcome');

export const options = {
  scenarios: {
    orders: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: Math.max(100, RATE),
      maxVUs: Math.max(500, RATE * 4),
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    accept_to_completed_ws: [`p(99)<${__ENV.P99_MS || 100}`],
  },
  summaryTrendStats: SUMMARY_STATS,
};

function outcome(view) {
  return view.status === 'completed' ? 'completed' : (view.rejection || {}).code || view.status;
}

export default function () {
  const tok = token();
  const r = checkout(tok);
  if (!check(r, { 'accepted (202)': (res) => res.status === 202 })) return;
  // The clock starts at the 202, as the server's accept time does.
  const started = Date.now();
  const id = r.json('order_id');
  if (Math.random() < WS_SHARE) {
    const url = `${BASE.replace('http', 'ws')}/v1/orders/${id}/ws?access_token=${tok}`;
    ws.connect(url, {}, (socket) => {
      socket.on('message', (text) => {
        const m = JSON.parse(text);
        if (m.status === 'completed' || m.status === 'rejected') {
          followed.add(Date.now() - started);
          if (m.status === 'completed') completed.add(Date.now() - started);
          outcomes.add(1, { outcome: outcome(m.order || m), via: 'ws' });
          socket.close();
        }
      });
      socket.setTimeout(() => socket.close(), 30000);
    });
    return;
  }
  for (let i = 0; i < 300; i++) {
    sleep(0.1);
    const view = getOrder(id, tok);
    if (view.status !== 200) continue;
    const status = view.json('status');
    if (status === 'completed' || status === 'rejected') {
      polled.add(Date.now() - started);
      outcomes.add(1, { outcome: outcome(view.json()), via: 'poll' });
      return;
    }
  }
}

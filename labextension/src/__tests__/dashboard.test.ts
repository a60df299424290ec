/**
 * Unit tests of the dashboard's specs and the load test form's checks (no DOM).
 */
import { strict as assert } from 'assert';
import { test } from 'node:test';

import { checkDuration, errorCell, parseLevels } from '../dashboard/loadtest';
import { IDashboardView, dashboardCharts, decisionRows, rangeCaption } from '../dashboard/specs';

const T = 1_700_000_000_000;

function view(extra: Partial<IDashboardView> = {}): IDashboardView {
  return {
    minutes: 5,
    interval_s: 5,
    now: T,
    since: T - 300_000,
    samples: 3,
    models: ['mnist 1.0'],
    series: {
      throughput: [{ t: T - 5000, model: 'mnist 1.0', rps: 2, requests: 10 }],
      latency: [
        { t: T - 5000, model: 'mnist 1.0', q: 'p50', ms: 6.9 },
        { t: T - 5000, model: 'mnist 1.0', q: 'p99', ms: 9.9 }
      ],
      workers: [{ t: T - 5000, model: 'mnist 1.0', workers: 1 }],
      autoscale: [{ t: T - 5000, model: 'mnist 1.0', action: 'up', count: 1 }]
    },
    decisions: [],
    error: null,
    ...extra
  };
}

test('every chart has a time axis over the range, a titled y axis and a legend field', () => {
  const charts = dashboardCharts(view());
  assert.deepEqual(
    charts.map(c => c.id),
    ['throughput', 'latency', 'queue', 'workers', 'errors', 'batch', 'worker_cpu', 'worker_memory']
  );
  for (const c of charts) {
    const spec = c.spec as any;
    const enc = spec.encoding ?? spec.layer[0].encoding;
    assert.equal(enc.x.type, 'temporal');
    assert.deepEqual(enc.x.scale.domain, [T - 300_000, T]);
    assert.ok(enc.y.title.length > 0, `${c.id} has a y title`);
    assert.equal(enc.color.type, 'nominal');
  }
  const latency = charts[1].spec as any;
  assert.equal(latency.encoding.y.title, 'latency (ms)');
  assert.equal(latency.encoding.strokeDash.field, 'q');
  assert.equal(latency.data.values.length, 2);
  assert.equal(charts[2].rows, 0, 'no queue rows: the chart says so');
});

test('GPU memory is charted only where there is a GPU', () => {
  const gpu = { t: T, gpu: 'GPU 0 (NVIDIA H200)', used_mb: 1024, total_mb: 143360 };
  const ids = dashboardCharts(view({ series: { gpu_memory: [gpu] } })).map(c => c.id);
  assert.ok(ids.includes('gpu_memory'));
});

test('autoscaler decisions: describe reasons first, else the counter', () => {
  assert.deepEqual(decisionRows(view()), [
    { t: T - 5000, model: 'mnist 1.0', action: 'up', change: '1 event(s)', reason: '' }
  ]);
  const d = {
    t: T - 1000,
    model: 'mnist 1.0',
    action: 'down',
    workers_before: 2,
    workers_after: 1,
    reason: 'idle for 30 s'
  };
  const rows = decisionRows(view({ decisions: [d] }));
  assert.equal(rows[0].change, '2 → 1');
  assert.equal(rows[0].reason, 'idle for 30 s');
  const workers = dashboardCharts(view({ decisions: [d] }))[3].spec as any;
  assert.equal(workers.layer[1].mark.type, 'rule');
  // whole workers on the axis, one above the most seen
  assert.deepEqual(workers.layer[0].encoding.y.axis.values, [0, 1, 2]);
  assert.equal(workers.layer[1].data.values.length, 1);
});

test('range caption', () => {
  assert.equal(rangeCaption(null), 'loading…');
  assert.equal(rangeCaption(view()), 'last 5 min · 3 samples, one every 5 s');
  assert.match(rangeCaption(view({ error: 'not running' })), /engine: not running/);
});

test('load test form checks', () => {
  assert.deepEqual(parseLevels('1, 8,32'), [1, 8, 32]);
  assert.match(parseLevels('') as string, /one or more/);
  assert.match(parseLevels('0,4') as string, /from 1 to 256/);
  assert.match(parseLevels('1.5') as string, /whole number/);
  assert.match(parseLevels('1,2,3,4,5,6,7') as string, /at most 6/);
  assert.equal(checkDuration(3), null);
  assert.match(checkDuration(0.1) as string, /0.5 to 30/);
  const row = { errors: 3, error_statuses: { '404': 2, timeout: 1, '200': 0 } } as any;
  assert.equal(errorCell(row), '3 (404×2, timeout×1)');
});

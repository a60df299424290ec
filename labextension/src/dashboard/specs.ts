/**
 * The dashboard's pure logic: the server extension's history (GET torchserve/dashboard) turned
 * into Vega-Lite v5 specs, one per chart. No DOM here, so `jlpm test` covers it.
 *
 * The history comes in long form (one row per time, series and value), which is what
 * Vega-Lite encodes directly: `color` splits by model version (or worker, GPU, status) and
 * makes the legend; every chart shares one time axis spanning the chosen range, so the charts
 * line up when read top to bottom.
 */

export const VEGALITE_MIME = 'application/vnd.vegalite.v5+json';
export const RANGES = [5, 15, 60] as const;
export type RangeMinutes = (typeof RANGES)[number];

export type Row = Record<string, string | number | null>;

export interface IDecision {
  t: number;
  model: string;
  action: string;
  workers_before?: number | null;
  workers_after?: number | null;
  reason?: string;
}

export interface IDashboardView {
  minutes: number;
  interval_s: number;
  now: number; // epoch ms
  since: number; // epoch ms
  samples: number;
  models: string[];
  series: Record<string, Row[]>;
  decisions: IDecision[];
  error: string | null;
}

export interface IChart {
  id: string;
  title: string;
  /** Rows drawn; 0 means the chart says "no data" instead of drawing empty axes. */
  rows: number;
  spec: Record<string, unknown>;
}

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v5.json';
const HEIGHT = 150;
/** Fixed, not 'container': a chart drawn while its panel is still hidden would measure 0 px. */
const WIDTH = 380;

/**
 * The frame every chart shares: one schema and one size, so the charts line up top to bottom,
 * and the title again as the spec's description (what Vega gives screen readers).
 */
function chart(id: string, title: string, rows: number, body: Record<string, unknown>): IChart {
  return {
    id,
    title,
    rows,
    spec: { $schema: SCHEMA, description: title, width: WIDTH, height: HEIGHT, ...body }
  };
}

function timeX(view: IDashboardView): Record<string, unknown> {
  return {
    field: 't',
    type: 'temporal',
    title: 'time',
    scale: { domain: [view.since, view.now] },
    axis: { format: view.minutes > 15 ? '%H:%M' : '%H:%M:%S', labelOverlap: true }
  };
}

function lineChart(
  view: IDashboardView,
  id: string,
  title: string,
  rows: Row[],
  y: { field: string; title: string; format?: string },
  color: { field: string; title: string },
  extra: Record<string, unknown> = {}
): IChart {
  return chart(id, title, rows.length, {
    data: { values: rows },
    mark: { type: 'line', point: rows.length < 60, interpolate: 'monotone' },
    encoding: {
      x: timeX(view),
      y: {
        field: y.field,
        type: 'quantitative',
        title: y.title,
        ...(y.format ? { axis: { format: y.format } } : {})
      },
      color: { field: color.field, type: 'nominal', title: color.title },
      tooltip: [
        { field: 't', type: 'temporal', title: 'time', format: '%H:%M:%S' },
        { field: color.field, type: 'nominal', title: color.title },
        { field: y.field, type: 'quantitative', title: y.title, format: '.3~f' }
      ],
      ...extra
    }
  });
}

/** Autoscaler decisions as rows for the workers chart: describe's (with reasons) if any,
 * else the `jts_autoscale_events_total` counter's growth (action and count only). */
export function decisionRows(view: IDashboardView): Row[] {
  if (view.decisions.length) {
    return view.decisions.map(d => ({
      t: d.t,
      model: d.model,
      action: d.action,
      change: `${d.workers_before ?? '?'} → ${d.workers_after ?? '?'}`,
      reason: d.reason ?? ''
    }));
  }
  return (view.series.autoscale ?? []).map(r => ({
    t: r.t,
    model: r.model,
    action: r.action,
    change: `${r.count} event(s)`,
    reason: ''
  }));
}

function workersChart(view: IDashboardView): IChart {
  const rows = view.series.workers ?? [];
  const decisions = decisionRows(view);
  const title = 'Workers (autoscaler decisions marked)';
  const top = Math.max(1, ...rows.map(r => Number(r.workers) || 0)) + 1;
  return chart('workers', title, rows.length, {
    layer: [
      {
        data: { values: rows },
        mark: { type: 'line', interpolate: 'step-after' },
        encoding: {
          x: timeX(view),
          y: {
            field: 'workers',
            type: 'quantitative',
            title: 'workers',
            // whole workers only, with headroom so a line at the maximum is not on the edge
            scale: { domain: [0, top] },
            axis: { values: Array.from({ length: top + 1 }, (_, i) => i), format: 'd' }
          },
          color: { field: 'model', type: 'nominal', title: 'model version' }
        }
      },
      {
        data: { values: decisions },
        mark: { type: 'rule', strokeDash: [4, 3], strokeWidth: 1.5 },
        encoding: {
          x: timeX(view),
          strokeDash: { field: 'action', type: 'nominal', title: 'autoscaler' },
          tooltip: [
            { field: 't', type: 'temporal', title: 'time', format: '%H:%M:%S' },
            { field: 'model', title: 'model version' },
            { field: 'action', title: 'decision' },
            { field: 'change', title: 'workers' },
            { field: 'reason', title: 'why' }
          ]
        }
      }
    ]
  });
}

/** Every chart of the dashboard, in reading order. GPU memory only when there is a GPU. */
export function dashboardCharts(view: IDashboardView): IChart[] {
  const s = (name: string): Row[] => view.series[name] ?? [];
  const model = { field: 'model', title: 'model version' };
  const charts: IChart[] = [
    lineChart(
      view,
      'throughput',
      'Throughput',
      s('throughput'),
      {
        field: 'rps',
        title: 'requests / s'
      },
      model
    ),
    lineChart(
      view,
      'latency',
      'Latency p50 and p99 (predictions)',
      s('latency'),
      { field: 'ms', title: 'latency (ms)' },
      model,
      { strokeDash: { field: 'q', type: 'nominal', title: 'percentile' } }
    ),
    lineChart(
      view,
      'queue',
      'Queue depth',
      s('queue'),
      {
        field: 'depth',
        title: 'requests waiting',
        format: 'd'
      },
      model
    ),
    workersChart(view),
    lineChart(
      view,
      'errors',
      'Errors by status (inference API)',
      s('errors'),
      {
        field: 'per_s',
        title: 'errors / s'
      },
      { field: 'status', title: 'HTTP status' }
    ),
    lineChart(
      view,
      'batch',
      'Batch size (mean requests per batch)',
      s('batch'),
      {
        field: 'mean',
        title: 'requests / batch'
      },
      model
    ),
    lineChart(
      view,
      'worker_cpu',
      'CPU per worker',
      s('worker_cpu'),
      {
        field: 'cores',
        title: 'CPU (cores)'
      },
      { field: 'worker', title: 'worker' }
    ),
    lineChart(
      view,
      'worker_memory',
      'Memory per worker (resident)',
      s('worker_memory'),
      {
        field: 'mb',
        title: 'memory (MiB)',
        format: '.0f'
      },
      { field: 'worker', title: 'worker' }
    )
  ];
  if (s('gpu_memory').length) {
    charts.push(
      lineChart(
        view,
        'gpu_memory',
        'GPU memory in use per device',
        s('gpu_memory'),
        {
          field: 'used_mb',
          title: 'GPU memory (MiB)',
          format: '.0f'
        },
        { field: 'gpu', title: 'device' }
      )
    );
  }
  return charts;
}

/** "last 15 min · 180 samples every 5 s", or why there is nothing yet. */
export function rangeCaption(view: IDashboardView | null): string {
  if (!view) {
    return 'loading…';
  }
  const base = `last ${view.minutes} min · ${view.samples} sample${view.samples === 1 ? '' : 's'}, one every ${view.interval_s} s`;
  return view.error ? `${base} · engine: ${view.error}` : base;
}

export function isRange(value: number): value is RangeMinutes {
  return (RANGES as readonly number[]).includes(value);
}

/**
 * The Metrics tab: requests per second and mean latency over the last minutes, for all models
 * or one, charted from the counters the model samples on each poll.
 */
import React, { useState } from 'react';

import { dashboardOpener } from '../dashboard/opener';
import { ISample, rates } from '../logic';
import { Button, Select } from '../widgets';
import { ITabProps } from './tab';

function Sparkline(props: {
  label: string;
  points: { t: number; y: number | null }[];
  unit: string;
  windowS: number;
}): JSX.Element {
  const w = 240;
  const h = 56;
  const pts = props.points.filter(p => p.y !== null) as { t: number; y: number }[];
  const now = pts.length ? pts[pts.length - 1].t : 0;
  // the x axis spans the data until the window is full, so a fresh panel is not a sliver
  const span = pts.length > 1 ? Math.min(props.windowS, now - pts[0].t) || 1 : props.windowS;
  const max = Math.max(1e-9, ...pts.map(p => p.y));
  const x = (t: number) => (pts.length > 1 ? w - ((now - t) / span) * w : w / 2);
  const y = (v: number) => h - 4 - (v / max) * (h - 8);
  const path = pts
    .map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.y).toFixed(1)}`)
    .join(' ');
  const last = pts.length ? pts[pts.length - 1].y : null;
  return (
    <figure className="jp-TorchServe-chart">
      <figcaption>
        {props.label}:{' '}
        <b>
          {last === null ? '–' : `${last.toFixed(props.unit === 'req/s' ? 2 : 1)} ${props.unit}`}
        </b>
        <span className="jp-TorchServe-muted"> (max {pts.length ? max.toFixed(1) : '–'})</span>
      </figcaption>
      <svg
        width="100%"
        height={h}
        viewBox={`0 0 ${w} ${h}`}
        preserveAspectRatio="none"
        role="img"
        aria-label={`${props.label} over the last ${props.windowS / 60} minutes`}
      >
        <path d={path} className="jp-TorchServe-line" vectorEffect="non-scaling-stroke" />
        {pts.length < 20 &&
          pts.map(p => (
            <circle key={p.t} cx={x(p.t)} cy={y(p.y)} r={2} className="jp-TorchServe-point" />
          ))}
      </svg>
    </figure>
  );
}

export function MetricsTab({ model }: ITabProps): JSX.Element {
  const [which, setWhich] = useState('');
  const history: ISample[] = model.history[which] ?? [];
  const r = rates(history);
  const names = Object.keys(model.history).filter(k => k);
  const err = model.overview?.metrics?.error;
  return (
    <div className="jp-TorchServe-section">
      <div className="jp-TorchServe-actions">
        <Button
          kind="accept"
          label="Open dashboard"
          title="Charts of the last 5/15/60 minutes in the main area"
          disabled={!dashboardOpener.open}
          onClick={() => dashboardOpener.open?.()}
        >
          Open dashboard
        </Button>
      </div>
      <div className="jp-TorchServe-row">
        <Select
          label="Model whose metrics to chart"
          value={which}
          values={names}
          onChange={setWhich}
        >
          <option value="">All models</option>
        </Select>
      </div>
      {err && <div className="jp-TorchServe-error">{err}</div>}
      <Sparkline
        label="Requests/s"
        unit="req/s"
        windowS={300}
        points={r.map(p => ({ t: p.t, y: p.rps }))}
      />
      <Sparkline
        label="Mean latency"
        unit="ms"
        windowS={300}
        points={r.map(p => ({ t: p.t, y: p.latencyMs }))}
      />
      <p className="jp-TorchServe-muted">
        {history.length
          ? `${history[history.length - 1].requests} requests in total`
          : 'No samples yet.'}
      </p>
    </div>
  );
}

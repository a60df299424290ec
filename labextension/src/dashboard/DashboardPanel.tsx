/**
 * The dashboard: a main-area panel with the last 5/15/60 minutes of the engine's metrics,
 * refreshed every few seconds from the server extension's history.
 *
 * Charts are Vega-Lite specs (specs.ts) drawn by JupyterLab's own Vega renderer
 * (@jupyterlab/vega5-extension) through the rendermime registry, so the extension ships no
 * charting bundle of its own, and charts follow the light/dark theme as notebook outputs do.
 */
import { MainAreaWidget, ReactWidget } from '@jupyterlab/apputils';
import { IRenderMime, IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';
import React, { useEffect, useRef, useState } from 'react';

import { ApiError, requestJSON } from '../api';
import { torchserveIcon } from '../icon';
import {
  IChart,
  IDashboardView,
  RANGES,
  RangeMinutes,
  VEGALITE_MIME,
  dashboardCharts,
  isRange,
  rangeCaption
} from './specs';

const REFRESH_MS = 5000;

export const fetchDashboard = (minutes: RangeMinutes): Promise<IDashboardView> =>
  requestJSON<IDashboardView>('dashboard', {}, { minutes });

/** One chart: a rendermime renderer kept across refreshes (Vega finalizes the old view). */
function VegaChart(props: { chart: IChart; rendermime: IRenderMimeRegistry }): JSX.Element {
  const host = useRef<HTMLDivElement>(null);
  const renderer = useRef<IRenderMime.IRenderer | null>(null);
  const [failure, setFailure] = useState<string | null>(null);

  useEffect(() => {
    return () => {
      renderer.current?.dispose();
      renderer.current = null;
    };
  }, []);

  useEffect(() => {
    if (!host.current) {
      return;
    }
    if (!renderer.current) {
      renderer.current = props.rendermime.createRenderer(VEGALITE_MIME);
      Widget.attach(renderer.current, host.current);
    }
    const model = new MimeModel({
      data: { [VEGALITE_MIME]: props.chart.spec as never },
      metadata: { [VEGALITE_MIME]: { embed_options: { actions: false, renderer: 'svg' } } }
    });
    renderer.current
      .renderModel(model)
      .then(() => setFailure(null))
      .catch(e => setFailure(String(e)));
  }, [props.chart]);

  return (
    <figure
      className="jp-TorchServe-dash-chart"
      aria-label={`${props.chart.title} chart`}
      data-chart={props.chart.id}
      data-rows={props.chart.rows}
    >
      <figcaption>
        {props.chart.title}
        {props.chart.rows === 0 && <span className="jp-TorchServe-muted"> · no data in range</span>}
      </figcaption>
      {failure && <div className="jp-TorchServe-error">{failure}</div>}
      <div className="jp-TorchServe-dash-vega" ref={host} />
    </figure>
  );
}

export function DashboardView(props: { rendermime: IRenderMimeRegistry }): JSX.Element {
  const [minutes, setMinutes] = useState<RangeMinutes>(15);
  const [auto, setAuto] = useState(true);
  const [view, setView] = useState<IDashboardView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  const hasVega = props.rendermime.mimeTypes.includes(VEGALITE_MIME);

  useEffect(() => {
    let alive = true;
    fetchDashboard(minutes)
      .then(v => {
        if (alive) {
          setView(v);
          setError(null);
        }
      })
      .catch((e: ApiError) => alive && setError(e.message));
    return () => {
      alive = false;
    };
  }, [minutes, tick]);

  useEffect(() => {
    if (!auto) {
      return;
    }
    const timer = window.setInterval(() => setTick(t => t + 1), REFRESH_MS);
    return () => window.clearInterval(timer);
  }, [auto]);

  const charts = view ? dashboardCharts(view) : [];
  return (
    <div className="jp-TorchServe-dashboard">
      <div className="jp-TorchServe-dash-toolbar">
        <label>
          Range{' '}
          <select
            aria-label="Time range"
            value={minutes}
            onChange={e => {
              const m = Number(e.target.value);
              if (isRange(m)) {
                setMinutes(m);
              }
            }}
          >
            {RANGES.map(m => (
              <option key={m} value={m}>
                last {m} min
              </option>
            ))}
          </select>
        </label>
        <label>
          <input
            type="checkbox"
            aria-label="Auto-refresh"
            checked={auto}
            onChange={e => setAuto(e.target.checked)}
          />{' '}
          auto-refresh every {REFRESH_MS / 1000} s
        </label>
        <button
          className="jp-Button jp-mod-styled jp-mod-minimal"
          aria-label="Refresh the dashboard"
          onClick={() => setTick(t => t + 1)}
        >
          ⟳ Refresh
        </button>
        <span className="jp-TorchServe-muted" role="status">
          {rangeCaption(view)}
        </span>
      </div>
      {error && (
        <div className="jp-TorchServe-error" role="alert">
          {error}
        </div>
      )}
      {!hasVega && (
        <div className="jp-TorchServe-error" role="alert">
          This JupyterLab has no Vega-Lite renderer ({VEGALITE_MIME}); enable
          @jupyterlab/vega5-extension to see the charts.
        </div>
      )}
      {hasVega && (
        <div className="jp-TorchServe-dash-grid">
          {charts.map(c => (
            <VegaChart key={c.id} chart={c} rendermime={props.rendermime} />
          ))}
        </div>
      )}
    </div>
  );
}

/** The main-area widget the "Open dashboard" command adds (one at a time). */
export function createDashboard(rendermime: IRenderMimeRegistry): MainAreaWidget {
  const content = ReactWidget.create(<DashboardView rendermime={rendermime} />);
  content.addClass('jp-TorchServe-dashboard-content');
  const widget = new MainAreaWidget({ content });
  widget.id = 'jp-TorchServe-dashboard';
  widget.title.label = 'TorchServe dashboard';
  widget.title.icon = torchserveIcon;
  widget.title.closable = true;
  return widget;
}

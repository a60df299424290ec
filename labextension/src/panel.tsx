/**
 * The sidebar: Engine, Models, Test, Logs and Metrics tabs over one `TorchServeModel`.
 */
import { Clipboard, Dialog, ReactWidget, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import React, { useCallback, useEffect, useRef, useState } from 'react';

import { ApiError, IEngineStatus, IModelEntry, api, jupyterBaseUrl } from './api';
import { torchserveIcon } from './icon';
import {
  IModelVersion,
  ISample,
  checkRequestSize,
  curlCommand,
  formatBytes,
  formatDuration,
  formatMs,
  parseSSE,
  prettyBody,
  rates,
  topK,
  workerState
} from './logic';
import { TorchServeModel } from './model';

export const TABS = ['engine', 'models', 'test', 'logs', 'metrics'] as const;
export type Tab = (typeof TABS)[number];
const TAB_LABELS: Record<Tab, string> = {
  engine: 'Engine',
  models: 'Models',
  test: 'Test',
  logs: 'Logs',
  metrics: 'Metrics'
};

/** Re-render on every model change. */
function useModel(model: TorchServeModel): number {
  const [tick, setTick] = useState(0);
  useEffect(() => {
    const onChange = () => setTick(t => t + 1);
    model.changed.connect(onChange);
    return () => {
      model.changed.disconnect(onChange);
    };
  }, [model]);
  return tick;
}

async function act(what: string, fn: () => Promise<unknown>, model: TorchServeModel): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (e) {
    const err = e as ApiError;
    await showErrorMessage(`TorchServe: ${what} failed`, err.message ?? String(e));
    return false;
  } finally {
    void model.refresh();
  }
}

// ---------------------------------------------------------------------------------- engine
function EngineTab({ model }: { model: TorchServeModel }): JSX.Element {
  const engine = model.overview?.engine;
  const [busy, setBusy] = useState(false);
  const start = async () => {
    setBusy(true);
    await act('start', api.start, model);
    setBusy(false);
  };
  const stop = async () => {
    const result = await showDialog({
      title: 'Stop the TorchServe engine?',
      body: 'Every model it serves stops answering.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Stop engine' })]
    });
    if (result.button.accept) {
      setBusy(true);
      await act('stop', api.stop, model);
      setBusy(false);
    }
  };
  if (!engine) {
    return <div className="jp-TorchServe-empty">Connecting…</div>;
  }
  if (!engine.running) {
    return (
      <div className="jp-TorchServe-section" data-engine="stopped">
        <p className="jp-TorchServe-message" role="status">
          {engine.message || 'The engine is not running.'}
        </p>
        <button
          className="jp-Button jp-mod-styled jp-mod-accept"
          aria-label="Start the TorchServe engine"
          disabled={busy}
          onClick={start}
        >
          {busy ? 'Starting…' : 'Start engine'}
        </button>
      </div>
    );
  }
  const rows: [string, string | undefined][] = [
    ['Version', engine.version],
    ['PID', engine.pid?.toString()],
    ['Uptime', formatDuration(engine.uptime_s)],
    ['Inference', engine.inference_address],
    ['Management', engine.management_address],
    ['Metrics', engine.metrics_address],
    ['Model store', engine.model_store],
    ['Max request', formatBytes(engine.max_request_size)]
  ];
  return (
    <div className="jp-TorchServe-section" data-engine="running">
      <table className="jp-TorchServe-kv" aria-label="Engine details">
        <tbody>
          {rows.map(([k, v]) => (
            <tr key={k}>
              <th scope="row">{k}</th>
              <td>{v ?? '–'}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3 className="jp-TorchServe-h">GPUs</h3>
      {engine.gpus && engine.gpus.length ? (
        <ul className="jp-TorchServe-gpus" aria-label="GPUs">
          {engine.gpus.map(g => (
            <li key={g.index}>
              <div>
                <b>GPU {g.index}</b> {g.name}
              </div>
              <Bar
                label={`GPU ${g.index} memory`}
                value={g.memory_used ?? 0}
                max={g.memory_total ?? 0}
                text={`${formatBytes(g.memory_used)} / ${formatBytes(g.memory_total)}`}
              />
              <Bar
                label={`GPU ${g.index} utilisation`}
                value={g.utilization ?? 0}
                max={100}
                text={`${g.utilization ?? 0}% busy`}
              />
            </li>
          ))}
        </ul>
      ) : (
        <p className="jp-TorchServe-muted">No GPU: models run on the CPU.</p>
      )}
      <button
        className="jp-Button jp-mod-styled jp-mod-warn"
        aria-label="Stop the TorchServe engine"
        disabled={busy}
        onClick={stop}
      >
        {busy ? 'Stopping…' : 'Stop engine'}
      </button>
    </div>
  );
}

function Bar(props: { label: string; value: number; max: number; text: string }): JSX.Element {
  const pct = props.max > 0 ? Math.min(100, (100 * props.value) / props.max) : 0;
  return (
    <div
      className="jp-TorchServe-bar"
      role="meter"
      aria-label={props.label}
      aria-valuemin={0}
      aria-valuemax={props.max}
      aria-valuenow={props.value}
    >
      <div className="jp-TorchServe-bar-fill" style={{ width: `${pct}%` }} />
      <span className="jp-TorchServe-bar-text">{props.text}</span>
    </div>
  );
}

// ---------------------------------------------------------------------------------- models
function VersionRow(props: {
  model: TorchServeModel;
  entry: IModelEntry;
  v: IModelVersion;
  multi: boolean;
}): JSX.Element {
  const { model, entry, v } = props;
  const workers = v.workers ?? [];
  const [busy, setBusy] = useState(false);
  const label = `${entry.modelName} version ${v.modelVersion}`;
  const scale = async (delta: number) => {
    const target = Math.max(0, workers.length + delta);
    setBusy(true);
    await act('scale', () => api.scale(entry.modelName, v.modelVersion, target), model);
    setBusy(false);
  };
  const unregister = async () => {
    const what = props.multi ? `version ${v.modelVersion} of ${entry.modelName}` : entry.modelName;
    const result = await showDialog({
      title: `Unregister ${what}?`,
      body: 'Its workers stop and requests to it fail. The archive stays in the model store.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Unregister' })]
    });
    if (result.button.accept) {
      setBusy(true);
      await act(
        'unregister',
        () => api.unregister(entry.modelName, props.multi ? v.modelVersion : undefined),
        model
      );
      setBusy(false);
    }
  };
  return (
    <li className="jp-TorchServe-version" data-version={v.modelVersion} aria-label={label}>
      <div className="jp-TorchServe-version-head">
        <span className="jp-TorchServe-version-name">v{v.modelVersion}</span>
        {v.isDefault && (
          <span className="jp-TorchServe-badge" title="Default version">
            default
          </span>
        )}
        <span className="jp-TorchServe-dots" aria-label={`${workers.length} workers`}>
          {workers.map(w => (
            <span
              key={w.id}
              className={`jp-TorchServe-dot jp-mod-${workerState(w.status)}`}
              title={`worker ${w.id}: ${w.status}${w.pid ? ` (pid ${w.pid})` : ''}`}
            />
          ))}
        </span>
        <span className="jp-TorchServe-worker-count" data-count={workers.length}>
          {workers.length} worker{workers.length === 1 ? '' : 's'}
        </span>
      </div>
      <div className="jp-TorchServe-muted">
        batch {v.batchSize ?? 1} · delay {v.maxBatchDelay ?? 0} ms · min {v.minWorkers ?? '–'} / max{' '}
        {v.maxWorkers ?? '–'}
      </div>
      <div className="jp-TorchServe-actions">
        <button
          className="jp-Button jp-mod-styled jp-mod-reject"
          aria-label={`Remove a worker from ${label}`}
          title="Remove a worker"
          disabled={busy || workers.length === 0}
          onClick={() => scale(-1)}
        >
          − worker
        </button>
        <button
          className="jp-Button jp-mod-styled jp-mod-reject"
          aria-label={`Add a worker to ${label}`}
          title="Add a worker"
          disabled={busy}
          onClick={() => scale(1)}
        >
          + worker
        </button>
        {!v.isDefault && (
          <button
            className="jp-Button jp-mod-styled jp-mod-reject"
            aria-label={`Make ${label} the default`}
            disabled={busy}
            onClick={() =>
              act('set default', () => api.setDefault(entry.modelName, v.modelVersion), model)
            }
          >
            Set default
          </button>
        )}
        <button
          className="jp-Button jp-mod-styled jp-mod-warn"
          aria-label={`Unregister ${label}`}
          disabled={busy}
          onClick={unregister}
        >
          Unregister
        </button>
      </div>
    </li>
  );
}

function ModelCard({ model, entry }: { model: TorchServeModel; entry: IModelEntry }): JSX.Element {
  const engine = model.overview?.engine;
  const copy = () => {
    Clipboard.copyToSystem(
      curlCommand(entry.modelName, jupyterBaseUrl(), engine?.inference_address)
    );
  };
  const p50 = entry.stats.latency_ms_p50 ?? entry.stats.latency_ms_mean;
  return (
    <li className="jp-TorchServe-model" data-model={entry.modelName}>
      <div className="jp-TorchServe-model-head">
        <span className="jp-TorchServe-model-name" title={entry.modelName}>
          {entry.modelName}
        </span>
        <span className="jp-TorchServe-muted" aria-label={`${entry.modelName} statistics`}>
          {entry.stats.requests ?? 0} req · p50 {formatMs(p50)}
        </span>
        <button
          className="jp-Button jp-mod-minimal jp-TorchServe-icon-button"
          aria-label={`Copy a curl command for ${entry.modelName}`}
          title="Copy a curl command"
          onClick={copy}
        >
          Copy curl
        </button>
      </div>
      {entry.error && <div className="jp-TorchServe-error">{entry.error}</div>}
      <ul className="jp-TorchServe-versions">
        {entry.versions.map(v => (
          <VersionRow
            key={v.modelVersion}
            model={model}
            entry={entry}
            v={v}
            multi={entry.versions.length > 1}
          />
        ))}
      </ul>
    </li>
  );
}

function RegisterForm({ model }: { model: TorchServeModel }): JSX.Element {
  const [archives, setArchives] = useState<string[]>([]);
  const [chosen, setChosen] = useState('');
  const [busy, setBusy] = useState(false);
  const load = useCallback(() => {
    api
      .store()
      .then(r => setArchives(r.archives.map(a => a.url)))
      .catch(() => setArchives([]));
  }, []);
  useEffect(load, [load]);
  const register = async () => {
    if (!chosen) {
      return;
    }
    setBusy(true);
    if (await act('register', () => api.register(chosen), model)) {
      setChosen('');
    }
    setBusy(false);
  };
  return (
    <div className="jp-TorchServe-row">
      <select
        className="jp-mod-styled"
        aria-label="Archive in the model store to register"
        value={chosen}
        onFocus={load}
        onChange={e => setChosen(e.target.value)}
      >
        <option value="">Model store…</option>
        {archives.map(a => (
          <option key={a} value={a}>
            {a}
          </option>
        ))}
      </select>
      <button
        className="jp-Button jp-mod-styled jp-mod-accept"
        aria-label="Register the chosen archive"
        disabled={!chosen || busy}
        onClick={register}
      >
        {busy ? 'Loading…' : 'Register'}
      </button>
    </div>
  );
}

function ModelsTab({ model }: { model: TorchServeModel }): JSX.Element {
  const models = model.overview?.models ?? [];
  return (
    <div className="jp-TorchServe-section">
      {models.length === 0 ? (
        <p className="jp-TorchServe-muted">
          No model registered. Deploy one from a notebook with{' '}
          <code>%torchserve deploy model --name mnist</code> or register an archive below.
        </p>
      ) : (
        <ul className="jp-TorchServe-models" aria-label="Models">
          {models.map(m => (
            <ModelCard key={m.modelName} model={model} entry={m} />
          ))}
        </ul>
      )}
      <RegisterForm model={model} />
    </div>
  );
}

// ---------------------------------------------------------------------------------- test
function ModelPicker(props: {
  model: TorchServeModel;
  value: string;
  onChange: (v: string) => void;
  label: string;
}): JSX.Element {
  const names = (props.model.overview?.models ?? []).map(m => m.modelName);
  useEffect(() => {
    if (!props.value && names.length) {
      props.onChange(names[0]);
    }
  });
  return (
    <select
      className="jp-mod-styled"
      aria-label={props.label}
      value={props.value}
      onChange={e => props.onChange(e.target.value)}
    >
      {names.length === 0 && <option value="">no model</option>}
      {names.map(n => (
        <option key={n} value={n}>
          {n}
        </option>
      ))}
    </select>
  );
}

interface IResult {
  status: number;
  latencyMs: number;
  serverMs?: number;
  pretty: string;
  json: unknown;
}

function TestTab({ model }: { model: TorchServeModel }): JSX.Element {
  const [name, setName] = useState('');
  const [file, setFile] = useState<File | null>(null);
  const [preview, setPreview] = useState<string | null>(null);
  const [refusal, setRefusal] = useState<string | null>(null);
  const [result, setResult] = useState<IResult | null>(null);
  const [busy, setBusy] = useState(false);
  const limit = model.overview?.engine.max_request_size;

  useEffect(() => {
    return () => {
      if (preview) {
        URL.revokeObjectURL(preview);
      }
    };
  }, [preview]);

  const onFile = (f: File | null) => {
    setFile(f);
    setResult(null);
    setPreview(f && f.type.startsWith('image/') ? URL.createObjectURL(f) : null);
    setRefusal(f ? checkRequestSize(f.size, limit) : null);
  };

  const send = async (body: Blob | string, contentType: string, protocol = 'predictions') => {
    setBusy(true);
    const t0 = performance.now();
    try {
      const resp =
        protocol === 'v2' ? await api.inferV2(name, body) : await api.predict(name, body, contentType);
      const text = await resp.text();
      const { pretty, json } = prettyBody(text);
      const server = Number(resp.headers.get('X-Torchserve-Latency-Ms'));
      setResult({
        status: resp.status,
        latencyMs: performance.now() - t0,
        serverMs: isFinite(server) && server > 0 ? server : undefined,
        pretty,
        json
      });
    } catch (e) {
      const err = e as ApiError;
      setResult({
        status: err.status,
        latencyMs: performance.now() - t0,
        pretty: `${err.type}: ${err.message}`,
        json: undefined
      });
    } finally {
      setBusy(false);
      void model.refresh();
    }
  };

  const sendFile = () => {
    if (!file || !name) {
      return;
    }
    const refused = checkRequestSize(file.size, limit);
    setRefusal(refused);
    if (!refused) {
      void send(file, file.type || 'application/octet-stream');
    }
  };

  const sendSample = async () => {
    try {
      const resp = await api.sample(name);
      const ctype = resp.headers.get('Content-Type') || 'application/json';
      const protocol = resp.headers.get('X-Torchserve-Sample-Protocol') || 'predictions';
      await send(await resp.blob(), ctype, protocol);
    } catch (e) {
      setResult({ status: (e as ApiError).status, latencyMs: 0, pretty: String((e as Error).message), json: undefined });
    }
  };

  const scores = result ? topK(result.json) : null;
  return (
    <div className="jp-TorchServe-section">
      <div className="jp-TorchServe-row">
        <ModelPicker model={model} value={name} onChange={setName} label="Model to test" />
      </div>
      <div className="jp-TorchServe-row">
        <input
          type="file"
          aria-label="Choose an input file"
          className="jp-TorchServe-file"
          onChange={e => onFile(e.target.files?.[0] ?? null)}
        />
      </div>
      {preview && <img className="jp-TorchServe-preview" src={preview} alt="Input preview" />}
      {refusal && (
        <div className="jp-TorchServe-error" role="alert">
          {refusal}
        </div>
      )}
      <div className="jp-TorchServe-actions">
        <button
          className="jp-Button jp-mod-styled jp-mod-accept"
          aria-label="Send the file for prediction"
          disabled={!file || !name || busy || !!refusal}
          onClick={sendFile}
        >
          {busy ? 'Predicting…' : 'Predict'}
        </button>
        <button
          className="jp-Button jp-mod-styled jp-mod-reject"
          aria-label="Send the archive's sample input"
          disabled={!name || busy}
          onClick={sendSample}
        >
          Send sample input
        </button>
      </div>
      {result && (
        <div
          className={`jp-TorchServe-result${result.status >= 400 || result.status === 0 ? ' jp-mod-error' : ''}`}
          aria-label="Prediction result"
        >
          <div className="jp-TorchServe-muted">
            HTTP {result.status} · {formatMs(result.latencyMs)} round trip
            {result.serverMs !== undefined && ` · ${formatMs(result.serverMs)} at the engine`}
          </div>
          {scores && scores.length > 0 && (
            <>
              <div className="jp-TorchServe-prediction" aria-label="Top prediction">
                Predicted: <b>{scores[0].label}</b> ({(scores[0].score * 100).toFixed(1)}%)
              </div>
              <ul className="jp-TorchServe-topk" aria-label="Top scores">
                {scores.map(s => (
                  <li key={s.label}>
                    <span className="jp-TorchServe-topk-label">{s.label}</span>
                    <Bar
                      label={`score of ${s.label}`}
                      value={s.score}
                      max={1}
                      text={s.score.toFixed(3)}
                    />
                  </li>
                ))}
              </ul>
            </>
          )}
          <pre className="jp-TorchServe-pre">{result.pretty}</pre>
        </div>
      )}
    </div>
  );
}

// ---------------------------------------------------------------------------------- logs
function LogsTab({ model }: { model: TorchServeModel }): JSX.Element {
  const [name, setName] = useState('');
  const [follow, setFollow] = useState(true);
  const [lines, setLines] = useState<string[]>([]);
  const [error, setError] = useState<string | null>(null);
  const pre = useRef<HTMLPreElement>(null);

  useEffect(() => {
    if (!name) {
      return;
    }
    setLines([]);
    setError(null);
    const controller = new AbortController();
    const run = async () => {
      if (!follow) {
        const text = await api.logs(name, 500);
        setLines(text.split('\n'));
        return;
      }
      const resp = await api.followLogs(name, 500, controller.signal);
      const reader = resp.body!.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          break;
        }
        buffer += decoder.decode(value, { stream: true });
        const { events, rest } = parseSSE(buffer);
        buffer = rest;
        const added = events.flatMap(e => (JSON.parse(e) as { lines: string[] }).lines);
        if (added.length) {
          setLines(old => old.concat(added).slice(-5000));
        }
      }
    };
    run().catch(e => {
      if (!controller.signal.aborted) {
        setError((e as Error).message);
      }
    });
    return () => controller.abort();
  }, [name, follow]);

  useEffect(() => {
    if (pre.current) {
      pre.current.scrollTop = pre.current.scrollHeight;
    }
  }, [lines]);

  return (
    <div className="jp-TorchServe-section jp-TorchServe-logs">
      <div className="jp-TorchServe-row">
        <ModelPicker model={model} value={name} onChange={setName} label="Model whose log to show" />
        <label className="jp-TorchServe-check">
          <input
            type="checkbox"
            checked={follow}
            aria-label="Follow new log lines"
            onChange={e => setFollow(e.target.checked)}
          />
          follow
        </label>
      </div>
      {error && (
        <div className="jp-TorchServe-error" role="alert">
          {error}
        </div>
      )}
      <pre ref={pre} className="jp-TorchServe-pre jp-TorchServe-log" aria-label="Model log" aria-live="polite">
        {lines.join('\n')}
      </pre>
    </div>
  );
}

// ---------------------------------------------------------------------------------- metrics
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
  const path = pts.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.y).toFixed(1)}`).join(' ');
  const last = pts.length ? pts[pts.length - 1].y : null;
  return (
    <figure className="jp-TorchServe-chart">
      <figcaption>
        {props.label}: <b>{last === null ? '–' : `${last.toFixed(props.unit === 'req/s' ? 2 : 1)} ${props.unit}`}</b>
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

function MetricsTab({ model }: { model: TorchServeModel }): JSX.Element {
  const [which, setWhich] = useState('');
  const history: ISample[] = model.history[which] ?? [];
  const r = rates(history);
  const names = Object.keys(model.history).filter(k => k);
  const err = model.overview?.metrics?.error;
  return (
    <div className="jp-TorchServe-section">
      <div className="jp-TorchServe-row">
        <select
          className="jp-mod-styled"
          aria-label="Model whose metrics to chart"
          value={which}
          onChange={e => setWhich(e.target.value)}
        >
          <option value="">All models</option>
          {names.map(n => (
            <option key={n} value={n}>
              {n}
            </option>
          ))}
        </select>
      </div>
      {err && <div className="jp-TorchServe-error">{err}</div>}
      <Sparkline label="Requests/s" unit="req/s" windowS={300} points={r.map(p => ({ t: p.t, y: p.rps }))} />
      <Sparkline
        label="Mean latency"
        unit="ms"
        windowS={300}
        points={r.map(p => ({ t: p.t, y: p.latencyMs }))}
      />
      <p className="jp-TorchServe-muted">
        {history.length ? `${history[history.length - 1].requests} requests in total` : 'No samples yet.'}
      </p>
    </div>
  );
}

// ---------------------------------------------------------------------------------- panel
export function TorchServePanelView(props: {
  model: TorchServeModel;
  tab: Tab;
  onTab: (t: Tab) => void;
}): JSX.Element {
  const { model, tab } = props;
  useModel(model);
  const engine: IEngineStatus | undefined = model.overview?.engine;
  const state = !model.overview ? 'unknown' : engine?.running ? 'running' : 'stopped';
  const count = model.overview?.models.length ?? 0;
  return (
    <div className="jp-TorchServe" data-state={state}>
      <header className="jp-TorchServe-header">
        <torchserveIcon.react tag="span" className="jp-TorchServe-logo" />
        <span className="jp-TorchServe-title">TorchServe</span>
        <span
          className={`jp-TorchServe-status jp-mod-${state}`}
          role="status"
          aria-label={`Engine ${state}, ${count} model${count === 1 ? '' : 's'}`}
          title={`${count} model${count === 1 ? '' : 's'} registered`}
        >
          {state}
        </span>
        <button
          className="jp-Button jp-mod-minimal jp-TorchServe-icon-button"
          aria-label="Refresh"
          title="Refresh"
          onClick={() => void model.refresh()}
        >
          ⟳
        </button>
      </header>
      {model.error && model.error.status !== 503 && (
        <div className="jp-TorchServe-error" role="alert">
          {model.error.message}
        </div>
      )}
      <div className="jp-TorchServe-tabs" role="tablist" aria-label="TorchServe sections">
        {TABS.map(t => (
          <button
            key={t}
            role="tab"
            id={`jp-TorchServe-tab-${t}`}
            aria-selected={t === tab}
            aria-controls={`jp-TorchServe-tabpanel-${t}`}
            aria-label={`${TAB_LABELS[t]} tab`}
            className={`jp-TorchServe-tab${t === tab ? ' jp-mod-active' : ''}`}
            onClick={() => props.onTab(t)}
          >
            {TAB_LABELS[t]}
          </button>
        ))}
      </div>
      <div
        className="jp-TorchServe-body"
        role="tabpanel"
        id={`jp-TorchServe-tabpanel-${tab}`}
        aria-labelledby={`jp-TorchServe-tab-${tab}`}
      >
        {tab !== 'engine' && state === 'stopped' ? (
          <EngineTab model={model} />
        ) : tab === 'engine' ? (
          <EngineTab model={model} />
        ) : tab === 'models' ? (
          <ModelsTab model={model} />
        ) : tab === 'test' ? (
          <TestTab model={model} />
        ) : tab === 'logs' ? (
          <LogsTab model={model} />
        ) : (
          <MetricsTab model={model} />
        )}
      </div>
    </div>
  );
}

/** The left-area widget. */
export class TorchServePanel extends ReactWidget {
  tab: Tab = 'models';

  constructor(readonly model: TorchServeModel) {
    super();
    this.id = 'jupyter-torchserve-panel';
    this.addClass('jp-TorchServe-panel');
    this.title.icon = torchserveIcon;
    this.title.caption = 'TorchServe';
    this.node.setAttribute('aria-label', 'TorchServe sidebar');
  }

  setTab(tab: Tab): void {
    this.tab = tab;
    this.update();
  }

  protected render(): JSX.Element {
    return <TorchServePanelView model={this.model} tab={this.tab} onTab={t => this.setTab(t)} />;
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}

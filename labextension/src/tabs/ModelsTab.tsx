/**
 * The Models tab: every registered model with its versions and workers; scale, make a version
 * the default, unregister, copy a curl command, export a deployment bundle, and register an
 * archive from the model store.
 */
import { Clipboard, Dialog, showDialog } from '@jupyterlab/apputils';
import React, { useCallback, useEffect, useState } from 'react';

import { IModelEntry, api, jupyterBaseUrl } from '../api';
import { act } from '../binding';
import {
  IEvaluation,
  IModelVersion,
  curlCommand,
  evaluationRows,
  formatMs,
  trafficLine,
  workerState
} from '../logic';
import { TorchServeModel } from '../model';
import { Button, Select } from '../widgets';
import { ExportForm } from './ExportForm';
import { ITabProps } from './tab';

/** A version's held-out report (deploy x_test/y_test): kernel and served figures. */
function EvaluationView({ e, label }: { e: IEvaluation; label: string }): JSX.Element {
  return (
    <details className="jp-TorchServe-evaluation" aria-label={`Evaluation of ${label}`}>
      <summary>
        Held-out evaluation: {e.rows} rows
        {typeof e.served.accuracy === 'number' &&
          ` · served accuracy ${(e.served.accuracy as number).toFixed(4)}`}
      </summary>
      <table className="jp-TorchServe-evaluation-table">
        <thead>
          <tr>
            <th>metric</th>
            <th>kernel</th>
            <th>served</th>
          </tr>
        </thead>
        <tbody>
          {evaluationRows(e).map(r => (
            <tr key={r.metric} data-metric={r.metric}>
              <td>{r.metric}</td>
              <td>{r.kernel}</td>
              <td>{r.served}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </details>
  );
}

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
        {v.traffic?.role === 'canary' && (
          <span className="jp-TorchServe-badge jp-mod-canary" title="Canary version">
            canary
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
      {v.traffic && (
        <div
          className="jp-TorchServe-traffic"
          data-percent={v.traffic.percent}
          aria-label={`Traffic of ${label}`}
        >
          <span className="jp-TorchServe-share">
            <span style={{ width: `${v.traffic.percent}%` }} />
          </span>
          {trafficLine(v.traffic)}
        </div>
      )}
      {v.evaluation && <EvaluationView e={v.evaluation} label={label} />}
      <div className="jp-TorchServe-actions">
        <Button
          kind="reject"
          label={`Remove a worker from ${label}`}
          title="Remove a worker"
          disabled={busy || workers.length === 0}
          onClick={() => scale(-1)}
        >
          − worker
        </Button>
        <Button
          kind="reject"
          label={`Add a worker to ${label}`}
          title="Add a worker"
          disabled={busy}
          onClick={() => scale(1)}
        >
          + worker
        </Button>
        {!v.isDefault && (
          <Button
            kind="reject"
            label={`Make ${label} the default`}
            disabled={busy}
            onClick={() =>
              act('set default', () => api.setDefault(entry.modelName, v.modelVersion), model)
            }
          >
            Set default
          </Button>
        )}
        <Button kind="warn" label={`Unregister ${label}`} disabled={busy} onClick={unregister}>
          Unregister
        </Button>
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
  const [exporting, setExporting] = useState(false);
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
        <button
          className="jp-Button jp-mod-minimal jp-TorchServe-icon-button"
          aria-label={`Export ${entry.modelName} for KServe, T9k or Ray`}
          aria-expanded={exporting}
          title="Write a deployment bundle into the Jupyter root"
          onClick={() => setExporting(e => !e)}
        >
          Export
        </button>
      </div>
      {exporting && <ExportForm name={entry.modelName} />}
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
      <Select
        label="Archive in the model store to register"
        value={chosen}
        values={archives}
        onFocus={load}
        onChange={setChosen}
      >
        <option value="">Model store…</option>
      </Select>
      <Button
        kind="accept"
        label="Register the chosen archive"
        disabled={!chosen || busy}
        onClick={register}
      >
        {busy ? 'Loading…' : 'Register'}
      </Button>
    </div>
  );
}

export function ModelsTab({ model }: ITabProps): JSX.Element {
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

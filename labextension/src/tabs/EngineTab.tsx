/**
 * The Engine tab: start/stop the engine and show its addresses, limits and GPUs. The panel
 * also shows it in place of any tab that needs a running engine while the engine is stopped.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import React, { useState } from 'react';

import { api } from '../api';
import { act } from '../binding';
import { formatBytes, formatDuration } from '../logic';
import { Bar, Button } from '../widgets';
import { ITabProps } from './tab';

export function EngineTab({ model }: ITabProps): JSX.Element {
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
        <Button kind="accept" label="Start the TorchServe engine" disabled={busy} onClick={start}>
          {busy ? 'Starting…' : 'Start engine'}
        </Button>
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
    ['gRPC inference', engine.grpc_inference_address ?? 'off'],
    ['gRPC management', engine.grpc_management_address ?? 'off'],
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
      <Button kind="warn" label="Stop the TorchServe engine" disabled={busy} onClick={stop}>
        {busy ? 'Stopping…' : 'Stop engine'}
      </Button>
    </div>
  );
}

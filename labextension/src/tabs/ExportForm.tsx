/**
 * A model's Export form in the Models tab: writes the model's deployment bundle (KServe, T9k,
 * Ray, TorchServe) into the Jupyter root through the server extension, as `%torchserve export`
 * does, and lists the files and the next commands. The targets and whether Ray's "run" is
 * offered come from the server, so the form never offers what the server would refuse.
 */
import React, { useEffect, useState } from 'react';

import { ApiError, api } from '../api';
import {
  IExportForm,
  IExportOffer,
  IExportResult,
  exportBody,
  exportFolder,
  exportFolderError,
  exportLines
} from '../logic';
import { Button, Notes, Select } from '../widgets';

export function ExportForm({ name }: { name: string }): JSX.Element {
  const [offer, setOffer] = useState<IExportOffer | null>(null);
  const [form, setForm] = useState<IExportForm>({
    target: 'kserve',
    protocol: 'v1',
    out: '',
    run: false,
    force: false
  });
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<IExportResult | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api
      .exportTargets(name)
      .then(setOffer)
      .catch((e: ApiError) => setError(e.message ?? String(e)));
  }, [name]);
  const set = (patch: Partial<IExportForm>) => setForm(f => ({ ...f, ...patch }));
  const folderError = exportFolderError(form.out);
  const submit = async () => {
    setBusy(true);
    setError(null);
    setResult(null);
    try {
      setResult(await api.exportModel(name, exportBody(name, form, offer)));
    } catch (e) {
      setError((e as ApiError).message ?? String(e));
    }
    setBusy(false);
  };
  const shown = result ? exportLines(result) : null;
  const label = `Export ${name}`;
  return (
    <div className="jp-TorchServe-export" aria-label={`${label} form`}>
      <div className="jp-TorchServe-row">
        <Select
          label={`Target to export ${name} for`}
          value={form.target}
          values={offer?.targets ?? ['kserve']}
          onChange={target => set({ target })}
        />
        {form.target === 'kserve' && (
          <Select
            label={`KServe protocol for ${name}`}
            title="KServe protocolVersion"
            value={form.protocol}
            values={offer?.protocols ?? ['v1']}
            onChange={protocol => set({ protocol })}
          />
        )}
      </div>
      <div className="jp-TorchServe-row">
        <input
          className="jp-mod-styled jp-TorchServe-export-out"
          aria-label={`Folder to export ${name} into`}
          title="A folder relative to the Jupyter root"
          placeholder={exportFolder(name, form.target)}
          value={form.out}
          onChange={e => set({ out: e.target.value })}
        />
      </div>
      <div className="jp-TorchServe-row">
        <label>
          <input
            type="checkbox"
            checked={form.force}
            onChange={e => set({ force: e.target.checked })}
          />{' '}
          write into a folder that is not empty
        </label>
        {form.target === 'ray' && offer?.ray_run && (
          <label title="Deploy the bundle on Ray Serve (a local cluster unless one is running)">
            <input
              type="checkbox"
              aria-label={`Run ${name} on Ray`}
              checked={form.run}
              onChange={e => set({ run: e.target.checked })}
            />{' '}
            run on Ray
          </label>
        )}
      </div>
      <div className="jp-TorchServe-actions">
        <Button
          kind="accept"
          label={`Write the ${form.target} bundle of ${name}`}
          disabled={busy || !offer || folderError !== null}
          onClick={submit}
        >
          {busy ? 'Exporting…' : 'Export'}
        </Button>
      </div>
      {(folderError || error) && (
        <div className="jp-TorchServe-error" role="alert">
          {folderError || error}
        </div>
      )}
      {shown && (
        <div className="jp-TorchServe-export-result" aria-label={`${label} result`}>
          <div>{shown.summary}</div>
          <ul className="jp-TorchServe-export-files" aria-label={`Files written for ${name}`}>
            {shown.files.map(f => (
              <li key={f}>
                <code>{f}</code>
              </li>
            ))}
          </ul>
          <Notes notes={shown.notes} />
          {shown.steps.map(s => (
            <div key={s.what + s.command} className="jp-TorchServe-export-step">
              <div className="jp-TorchServe-muted">{s.what}</div>
              <pre>{s.command}</pre>
            </div>
          ))}
        </div>
      )}
    </div>
  );
}

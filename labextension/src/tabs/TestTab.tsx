/**
 * The Test tab: send an uploaded file or the archive's own sample input to a model and show
 * the answer (status, latency at the engine and round trip, top scores, the body); and a short
 * load test on the sample input (the server runs `%torchserve bench`'s code) as a table.
 */
import React, { useEffect, useState } from 'react';

import { ApiError, api, requestJSON } from '../api';
import { ILoadTestResult, checkDuration, errorCell, parseLevels } from '../dashboard/loadtest';
import {
  IHeatmap,
  IToken,
  checkRequestSize,
  explanationFacts,
  formatMs,
  heatmap,
  prettyBody,
  tokens,
  topK
} from '../logic';
import { Bar, Button, ModelPicker, Notes } from '../widgets';
import { ITabProps } from './tab';

interface IResult {
  status: number;
  latencyMs: number;
  serverMs?: number;
  pretty: string;
  json: unknown;
  explained?: boolean;
  facts?: string[];
}

/** The heatmap as a PNG data URL (drawn once on an off-screen canvas), for an <img>. */
function heatmapURL(map: IHeatmap): string {
  const canvas = document.createElement('canvas');
  canvas.width = map.width;
  canvas.height = map.height;
  const ctx = canvas.getContext('2d');
  ctx?.putImageData(new ImageData(map.rgba, map.width, map.height), 0, 0);
  return canvas.toDataURL('image/png');
}

/** Input | signed heatmap | the heatmap over the input (the notebook's three panels). */
function ExplainedImage({ map, input }: { map: IHeatmap; input: string | null }): JSX.Element {
  const url = heatmapURL(map);
  return (
    <div className="jp-TorchServe-explained" aria-label="Explanation">
      {input && <img className="jp-TorchServe-explain-panel" src={input} alt="Explained input" />}
      <img className="jp-TorchServe-explain-panel" src={url} alt="Attribution heatmap" />
      {input && (
        <div className="jp-TorchServe-explain-panel jp-TorchServe-explain-overlay">
          <img src={input} alt="" />
          <img src={url} alt="Heatmap over the input" />
        </div>
      )}
    </div>
  );
}

function ExplainedText({ words }: { words: IToken[] }): JSX.Element {
  return (
    <div className="jp-TorchServe-explained-text" aria-label="Explanation">
      {words.map((t, i) => (
        <span
          key={i}
          className="jp-TorchServe-token"
          style={{ background: t.color }}
          title={t.importance.toFixed(3)}
        >
          {t.word}
        </span>
      ))}
    </div>
  );
}

const ms = (v: number | null): string => (v === null ? '–' : v.toFixed(1));

/** Concurrency levels and a duration; runs on the sample input; one table row per level. */
function LoadTest({ name }: { name: string }): JSX.Element {
  const [levelsText, setLevelsText] = useState('1,4');
  const [duration, setDuration] = useState(3);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<ILoadTestResult | null>(null);
  const [error, setError] = useState<string | null>(null);
  const levels = parseLevels(levelsText);
  const problem = typeof levels === 'string' ? levels : checkDuration(duration);

  const run = async () => {
    if (typeof levels === 'string' || problem || !name) {
      return;
    }
    setBusy(true);
    setError(null);
    setResult(null);
    try {
      setResult(
        await requestJSON<ILoadTestResult>(`models/${encodeURIComponent(name)}/loadtest`, {
          method: 'POST',
          body: JSON.stringify({ concurrency: levels, duration })
        })
      );
    } catch (e) {
      setError((e as ApiError).message);
    } finally {
      setBusy(false);
    }
  };

  const seconds = typeof levels === 'string' ? 0 : levels.length * duration;
  return (
    <fieldset className="jp-TorchServe-loadtest" aria-label="Load test">
      <legend>Load test (sample input)</legend>
      <div className="jp-TorchServe-row">
        <label>
          Concurrency{' '}
          <input
            className="jp-mod-styled jp-TorchServe-loadtest-levels"
            aria-label="Concurrency levels"
            value={levelsText}
            onChange={e => setLevelsText(e.target.value)}
          />
        </label>
        <label>
          Seconds per level{' '}
          <input
            type="number"
            className="jp-mod-styled jp-TorchServe-loadtest-duration"
            aria-label="Seconds per level"
            min={0.5}
            max={30}
            step={0.5}
            value={duration}
            onChange={e => setDuration(Number(e.target.value))}
          />
        </label>
      </div>
      {problem && <div className="jp-TorchServe-muted">{problem}</div>}
      <div className="jp-TorchServe-actions">
        <Button
          kind="accept"
          label="Run the load test"
          disabled={!name || busy || !!problem}
          onClick={run}
        >
          {busy ? `Running… (about ${Math.ceil(seconds)} s)` : 'Run load test'}
        </Button>
      </div>
      {error && (
        <div className="jp-TorchServe-error" role="alert">
          {error}
        </div>
      )}
      {result && (
        <>
          <table className="jp-TorchServe-table" aria-label="Load test results">
            <thead>
              <tr>
                <th>concurrency</th>
                <th>req/s</th>
                <th>p50 ms</th>
                <th>p90 ms</th>
                <th>p99 ms</th>
                <th>errors</th>
              </tr>
            </thead>
            <tbody>
              {result.rows.map(r => (
                <tr key={`${r.workers}-${r.concurrency}`}>
                  <td>{r.concurrency}</td>
                  <td>{r.req_per_s.toFixed(1)}</td>
                  <td>{ms(r.p50_ms)}</td>
                  <td>{ms(r.p90_ms)}</td>
                  <td>{ms(r.p99_ms)}</td>
                  <td>{errorCell(r)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <Notes notes={result.notes} />
        </>
      )}
    </fieldset>
  );
}

export function TestTab({ model }: ITabProps): JSX.Element {
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
        protocol === 'v2'
          ? await api.inferV2(name, body)
          : protocol === 'explanations'
            ? await api.explain(name, body, contentType)
            : await api.predict(name, body, contentType);
      const text = await resp.text();
      const { pretty, json } = prettyBody(text);
      const server = Number(resp.headers.get('X-Torchserve-Latency-Ms'));
      setResult({
        status: resp.status,
        latencyMs: performance.now() - t0,
        serverMs: isFinite(server) && server > 0 ? server : undefined,
        pretty,
        json,
        explained: protocol === 'explanations',
        facts: explanationFacts(resp.headers.get('X-Explanation'))
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

  const sendFile = (protocol = 'predictions') => {
    if (!file || !name) {
      return;
    }
    const refused = checkRequestSize(file.size, limit);
    setRefusal(refused);
    if (!refused) {
      void send(file, file.type || 'application/octet-stream', protocol);
    }
  };

  const sendSample = async () => {
    try {
      const resp = await api.sample(name);
      const ctype = resp.headers.get('Content-Type') || 'application/json';
      const protocol = resp.headers.get('X-Torchserve-Sample-Protocol') || 'predictions';
      await send(await resp.blob(), ctype, protocol);
    } catch (e) {
      setResult({
        status: (e as ApiError).status,
        latencyMs: 0,
        pretty: String((e as Error).message),
        json: undefined
      });
    }
  };

  const scores = result && !result.explained ? topK(result.json) : null;
  const map = result?.explained && result.status < 400 ? heatmap(result.json) : null;
  const words = result?.explained && result.status < 400 ? tokens(result.json) : null;
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
        <Button
          kind="accept"
          label="Send the file for prediction"
          disabled={!file || !name || busy || !!refusal}
          onClick={() => sendFile()}
        >
          {busy ? 'Working…' : 'Predict'}
        </Button>
        <Button
          kind="accept"
          label="Explain the prediction for the file"
          title="Integrated Gradients toward the predicted class: about 15 predictions' work"
          disabled={!file || !name || busy || !!refusal}
          onClick={() => sendFile('explanations')}
        >
          Explain
        </Button>
        <Button
          kind="reject"
          label="Send the archive's sample input"
          disabled={!name || busy}
          onClick={sendSample}
        >
          Send sample input
        </Button>
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
          {map && <ExplainedImage map={map} input={preview} />}
          {words && <ExplainedText words={words} />}
          {result.facts && result.facts.length > 0 && (
            <ul className="jp-TorchServe-explain-facts" aria-label="Explanation facts">
              {result.facts.map(f => (
                <li key={f}>{f}</li>
              ))}
            </ul>
          )}
          {!map && <pre className="jp-TorchServe-pre">{result.pretty}</pre>}
        </div>
      )}
      <LoadTest name={name} />
    </div>
  );
}

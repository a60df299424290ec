/**
 * Pure functions of the sidebar (no DOM, no JupyterLab imports) so they run under `node --test`.
 */

/** One worker as TorchServe's describe call reports it. */
export interface IWorker {
  id: string;
  status: string;
  pid?: number;
  gpu?: boolean;
  memoryUsage?: number;
  startTime?: string;
}

/** One model version as TorchServe's describe call reports it (plus our `isDefault`). */
export interface IModelVersion {
  modelName: string;
  modelVersion: string;
  modelUrl?: string;
  minWorkers?: number;
  maxWorkers?: number;
  batchSize?: number;
  maxBatchDelay?: number;
  isDefault?: boolean;
  workers?: IWorker[];
  /** The engine's canary split, on the default version and the canary while one runs. */
  traffic?: ITraffic;
  /** The held-out report a deploy stored in the version's archive (evaluation.py). */
  evaluation?: IEvaluation;
}

export interface ITraffic {
  role: 'default' | 'canary' | string;
  percent: number;
  requests: number;
  observedPercent: number | null;
}

export interface IEvaluation {
  rows: number;
  task: string;
  agreement: number;
  classes?: number[];
  metric_name?: string | null;
  served: Record<string, unknown>;
  kernel: Record<string, unknown>;
}

export interface IModelStats {
  requests?: number;
  errors?: number;
  latency_ms_p50?: number;
  latency_ms_mean?: number;
  latency_ms_total?: number;
}

/** A point of the metrics history the charts draw (one per poll). */
export interface ISample {
  t: number; // seconds since the epoch
  requests: number;
  latencyTotal: number; // ms, cumulative
}

export type WorkerState = 'ready' | 'busy' | 'loading' | 'failed';

/** Map TorchServe's worker status words onto the four colours of the worker dots. */
export function workerState(status: string | undefined): WorkerState {
  const s = (status || '').toUpperCase();
  if (s === 'READY' || s === 'WORKER_MODEL_LOADED' || s === 'IDLE') {
    return 'ready';
  }
  if (s.includes('BUSY') || s.includes('RUNNING')) {
    return 'busy';
  }
  if (s.includes('START') || s.includes('LOAD') || s.includes('SCALED')) {
    return 'loading';
  }
  return 'failed';
}

/** Bytes for people: 6553500 -> "6.25 MiB". */
export function formatBytes(n: number | undefined | null): string {
  if (n === undefined || n === null || !isFinite(n)) {
    return '–';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(2)} ${units[i]}`;
}

export function formatDuration(seconds: number | undefined | null): string {
  if (seconds === undefined || seconds === null || !isFinite(seconds)) {
    return '–';
  }
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h) {
    return `${h}h ${m}m`;
  }
  if (m) {
    return `${m}m ${r}s`;
  }
  return `${r}s`;
}

export function formatMs(ms: number | undefined | null): string {
  if (ms === undefined || ms === null || !isFinite(ms)) {
    return '–';
  }
  return ms >= 100 ? `${ms.toFixed(0)} ms` : `${ms.toFixed(1)} ms`;
}

/**
 * Refuse a file before upload when the engine would refuse it (413), naming the limit.
 * Returns null when the file may be sent.
 */
export function checkRequestSize(size: number, limit: number | undefined | null): string | null {
  if (!limit || limit <= 0 || size <= limit) {
    return null;
  }
  return (
    `The file is ${formatBytes(size)}, larger than the engine's max_request_size of ` +
    `${limit} bytes (${formatBytes(limit)}); it was not sent.`
  );
}

/** A shell-quoted string for curl snippets. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'"'"'`)}'`;
}

/**
 * The curl commands for a model: through Jupyter (works for remote users, with their Jupyter
 * token) and straight to the engine's inference address (works on the machine itself).
 */
export function curlCommand(
  model: string,
  jupyterBaseUrl: string,
  inferenceAddress?: string | null,
  version?: string | null
): string {
  const tail = `predictions/${encodeURIComponent(model)}${
    version ? '/' + encodeURIComponent(version) : ''
  }`;
  const base = jupyterBaseUrl.endsWith('/') ? jupyterBaseUrl : jupyterBaseUrl + '/';
  const lines = [
    '# through Jupyter (set JUPYTER_TOKEN to your Jupyter token)',
    `curl -H "Authorization: token $JUPYTER_TOKEN" -T input.png ${shellQuote(
      base + 'torchserve/' + tail
    )}`
  ];
  if (inferenceAddress) {
    const addr = inferenceAddress.replace(/\/$/, '');
    lines.push('# straight to the engine', `curl -T input.png ${shellQuote(addr + '/' + tail)}`);
  }
  return lines.join('\n');
}

/** A label and a score, for the top-k bars. */
export interface IScore {
  label: string;
  score: number;
}

/**
 * Classifier scores from a prediction response, best first, or null when it is not one.
 * Understands TorchServe's image_classifier (`{"7": 0.98, ...}` or a list of them),
 * `{"predictions": [...]}` (KServe v1) and `[{"label": .., "score"|"probability": ..}]`.
 */
export function topK(response: unknown, k = 5): IScore[] | null {
  let r: unknown = response;
  if (r && typeof r === 'object' && !Array.isArray(r) && 'predictions' in r) {
    r = (r as { predictions: unknown }).predictions;
  }
  if (Array.isArray(r)) {
    if (r.length && r.every(isLabelScore)) {
      return sortScores(
        r.map(x => ({ label: String(x.label), score: Number(x.score ?? x.probability) })),
        k
      );
    }
    if (r.length === 1) {
      r = r[0];
    } else {
      return null;
    }
  }
  if (r && typeof r === 'object' && !Array.isArray(r)) {
    const entries = Object.entries(r as Record<string, unknown>);
    if (entries.length && entries.every(([, v]) => typeof v === 'number' && isFinite(v))) {
      return sortScores(
        entries.map(([label, score]) => ({ label, score: score as number })),
        k
      );
    }
  }
  return null;
}

function isLabelScore(x: unknown): x is { label: unknown; score?: unknown; probability?: unknown } {
  return (
    !!x &&
    typeof x === 'object' &&
    'label' in x &&
    (typeof (x as { score?: unknown }).score === 'number' ||
      typeof (x as { probability?: unknown }).probability === 'number')
  );
}

function sortScores(scores: IScore[], k: number): IScore[] {
  return scores.sort((a, b) => b.score - a.score).slice(0, k);
}

/** Keep only the samples of the last `windowS` seconds (the charts show a few minutes). */
export function trimHistory(history: ISample[], now: number, windowS = 300): ISample[] {
  return history.filter(s => now - s.t <= windowS);
}

/** Requests per second and mean latency per interval from cumulative counters. */
export function rates(history: ISample[]): { t: number; rps: number; latencyMs: number | null }[] {
  const out: { t: number; rps: number; latencyMs: number | null }[] = [];
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1];
    const b = history[i];
    const dt = b.t - a.t;
    const dr = b.requests - a.requests;
    if (dt <= 0 || dr < 0) {
      continue; // engine restarted (counters reset): skip the step
    }
    const dl = b.latencyTotal - a.latencyTotal;
    out.push({ t: b.t, rps: dr / dt, latencyMs: dr > 0 && dl >= 0 ? dl / dr : null });
  }
  return out;
}

/** The refresh interval of the settings schema (seconds): its default and bounds. */
export const REFRESH_INTERVAL = { defaultS: 2, minS: 0.5, maxS: 600 } as const;

/**
 * The poll period in ms from the `refreshInterval` setting (seconds). Anything that is not a
 * finite number (unset, hand-edited JSON) gives the default; values are clamped to the bounds.
 */
export function refreshIntervalMs(setting: unknown): number {
  const s = typeof setting === 'number' && isFinite(setting) ? setting : REFRESH_INTERVAL.defaultS;
  const clamped = Math.min(REFRESH_INTERVAL.maxS, Math.max(REFRESH_INTERVAL.minS, s));
  return Math.round(clamped * 1000);
}

/**
 * Next poll delay: the normal period while the engine answers, doubling while it is gone up to
 * a cap of 30 s (or the period itself when that is longer).
 */
export function nextDelay(failures: number, baseMs = 2000, maxMs = 30000): number {
  if (failures <= 0) {
    return baseMs;
  }
  return Math.min(Math.max(maxMs, baseMs), baseMs * Math.pow(2, failures));
}

/** Parse server-sent events from a text buffer: returns complete `data:` payloads and the rest. */
export function parseSSE(buffer: string): { events: string[]; rest: string } {
  const events: string[] = [];
  const parts = buffer.split(/\r?\n\r?\n/);
  const rest = parts.pop() ?? '';
  for (const part of parts) {
    const data = part
      .split(/\r?\n/)
      .filter(l => l.startsWith('data:'))
      .map(l => l.slice(5).replace(/^ /, ''));
    if (data.length) {
      events.push(data.join('\n'));
    }
  }
  return { events, rest };
}

/** Pretty-print a response body: JSON indented, anything else as text. */
export function prettyBody(text: string): { pretty: string; json: unknown } {
  try {
    const json = JSON.parse(text);
    return { pretty: JSON.stringify(json, null, 2), json };
  } catch {
    return { pretty: text, json: undefined };
  }
}

/** An image explanation as pixels: RGBA, red where the attribution pushes toward the target,
 * blue where it pushes away, opacity growing with |attribution| (so the input shows through
 * where it is 0). The values are summed over channels, as the notebook's drawing does. */
export interface IHeatmap {
  width: number;
  height: number;
  rgba: Uint8ClampedArray;
}

/** TorchServe's image answer (`[C][H][W]` or `[H][W]`), or KServe v1 `{"explanations":
 * [...]}` of one, as a heatmap; null for anything else (text, tensors). */
export function heatmap(answer: unknown): IHeatmap | null {
  let value = answer;
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const wrapped = (value as { explanations?: unknown[] }).explanations;
    value = Array.isArray(wrapped) ? wrapped[0] : null;
  }
  const isRow = (r: unknown): r is number[] =>
    Array.isArray(r) && r.length > 0 && r.every(v => typeof v === 'number');
  const isPlane = (p: unknown): p is number[][] =>
    Array.isArray(p) && p.length > 0 && p.every(isRow) && p.every(r => r.length === p[0].length);
  let planes: number[][][];
  if (isPlane(value)) {
    planes = [value];
  } else if (Array.isArray(value) && value.length > 0 && value.every(isPlane)) {
    planes = value as number[][][];
  } else {
    return null;
  }
  const height = planes[0].length;
  const width = planes[0][0].length;
  if (width < 2 || height < 2 || planes.some(p => p.length !== height || p[0].length !== width)) {
    return null;
  }
  const sum = new Float64Array(width * height);
  for (const plane of planes) {
    plane.forEach((row, y) => row.forEach((v, x) => (sum[y * width + x] += v)));
  }
  const bound = sum.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
  const rgba = new Uint8ClampedArray(width * height * 4);
  sum.forEach((v, i) => {
    const strength = Math.abs(v) / bound;
    rgba.set(v >= 0 ? [214, 39, 40] : [31, 119, 180], i * 4);
    rgba[i * 4 + 3] = Math.round(255 * strength);
  });
  return { width, height, rgba };
}

/** A word of a text explanation with its background colour (red toward, blue away). */
export interface IToken {
  word: string;
  importance: number;
  color: string;
}

/** `{"words": [...], "importances": [...]}` (TorchServe's text answer, or the first of a
 * KServe v1 list) as coloured tokens; null for anything else. */
export function tokens(answer: unknown): IToken[] | null {
  let value = answer;
  const wrapped = (value as { explanations?: unknown[] } | null)?.explanations;
  if (Array.isArray(wrapped)) {
    value = wrapped[0];
  }
  if (Array.isArray(value) && value.length === 1) {
    value = value[0];
  }
  const { words, importances } = (value ?? {}) as { words?: unknown; importances?: unknown };
  if (!Array.isArray(words) || !Array.isArray(importances) || words.length !== importances.length) {
    return null;
  }
  const values = importances.map(Number);
  const bound = values.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
  return words.map((word, i) => {
    const a = (Math.abs(values[i]) / bound).toFixed(2);
    const color = values[i] >= 0 ? `rgba(214, 39, 40, ${a})` : `rgba(31, 119, 180, ${a})`;
    return { word: String(word), importance: values[i], color };
  });
}

/** The facts of the `x-explanation` response header a person reads next to the drawing. */
export function explanationFacts(header: string | null): string[] {
  if (!header) {
    return [];
  }
  let info: Record<string, unknown>;
  try {
    info = JSON.parse(header);
  } catch {
    return [];
  }
  const lines: string[] = [];
  const named = (label: unknown, index: unknown) =>
    label !== undefined && String(label) !== String(index)
      ? `${label} (class ${index})`
      : String(index);
  if (info.prediction !== undefined) {
    lines.push(`predicted ${named(info.label, info.prediction)}`);
  }
  if (info.target !== undefined) {
    lines.push(`explained toward ${named(info.target_label, info.target)}`);
  }
  if (typeof info.delta === 'number') {
    lines.push(`convergence delta ${info.delta.toPrecision(3)}`);
  }
  if (info.method !== undefined) {
    lines.push(`${info.method}, ${info.n_steps ?? '?'} steps`);
  }
  return lines;
}

/** What the export route offers (GET `models/NAME/export`). */
export interface IExportOffer {
  targets: string[];
  protocols: string[];
  ray_run: boolean; // Ray is installed next to the Jupyter server, so "run" can deploy
}

/** The sidebar's export form, as the user left it. */
export interface IExportForm {
  target: string;
  protocol: string; // KServe's protocolVersion; ignored for the other targets
  out: string; // folder relative to the Jupyter root; blank means the default
  run: boolean; // Ray only, and only where the offer says ray_run
  force: boolean; // write into a folder that is not empty
}

/** What a finished export answers (POST `models/NAME/export`). */
export interface IExportResult {
  target: string;
  model: string;
  versions: string[];
  out: string; // relative to the Jupyter root
  files: string[]; // relative to `out`
  next_steps: { what: string; command: string }[];
  notes: string[];
  url?: string | null;
  text: string;
}

/** The folder an export writes to when the user names none, as `%torchserve export` does. */
export function exportFolder(model: string, target: string): string {
  return `${model}-${target}`;
}

/**
 * The POST body for a form. Options a target has no use for are left out rather than sent,
 * because the server refuses `run` for anything but Ray (it would otherwise name a flag the
 * user never saw).
 */
export function exportBody(
  model: string,
  form: IExportForm,
  offer: IExportOffer | null
): Record<string, string | boolean> {
  const body: Record<string, string | boolean> = {
    to: form.target,
    out: form.out.trim() || exportFolder(model, form.target)
  };
  if (form.target === 'kserve' && form.protocol) {
    body.protocol = form.protocol;
  }
  if (form.target === 'ray' && form.run && offer?.ray_run) {
    body.run = true;
  }
  if (form.force) {
    body.force = true;
  }
  return body;
}

/**
 * A folder the server would refuse (it must stay inside the Jupyter root), told before the
 * request; null when it may be sent. The server checks again: this only saves a round trip.
 */
export function exportFolderError(out: string): string | null {
  const s = out.trim();
  if (s.startsWith('/') || s.startsWith('~') || /^[A-Za-z]:[\\/]/.test(s)) {
    return 'The folder is relative to the Jupyter root; leave out the leading / or ~.';
  }
  if (s.split(/[\\/]/).includes('..')) {
    return 'The folder must stay inside the Jupyter root (no .. in it).';
  }
  return null;
}

/**
 * An export's answer as the lines the sidebar lists: the files by their path from the
 * Jupyter root (what the file browser shows), then notes, then the next commands.
 */
export function exportLines(result: IExportResult): {
  files: string[];
  notes: string[];
  steps: { what: string; command: string }[];
  summary: string;
} {
  const out = result.out.replace(/\/+$/, '');
  const files = result.files.map(f => (out && out !== '.' ? `${out}/${f}` : f));
  const versions = result.versions.length ? ` (${result.versions.join(', ')})` : '';
  const notes = [...result.notes];
  if (result.url) {
    notes.unshift(`Serving at ${result.url}`);
  }
  return {
    files,
    notes,
    steps: result.next_steps,
    summary:
      `Exported ${result.model}${versions} for ${result.target}: ` +
      `${files.length} file${files.length === 1 ? '' : 's'} in ${out || '.'}/`
  };
}

/** A version's part of its model's default route while a canary runs, in one line. */
export function trafficLine(t: ITraffic): string {
  const seen =
    t.observedPercent === null || t.observedPercent === undefined
      ? 'no request yet'
      : `${t.requests} req, ${t.observedPercent.toFixed(1)} % seen`;
  return `${t.role} ${t.percent} % of the default route · ${seen}`;
}

/**
 * The figures of a held-out report the version row shows, kernel beside served: the scalar
 * metrics that are there (accuracy, MSE, MAE, R², the user's own), then the agreement.
 */
export function evaluationRows(
  e: IEvaluation
): { metric: string; kernel: string; served: string }[] {
  const num = (v: unknown): string => (typeof v === 'number' && isFinite(v) ? v.toFixed(4) : '–');
  const names: Record<string, string> = {
    accuracy: 'accuracy',
    mse: 'MSE',
    mae: 'MAE',
    r2: 'R²',
    custom: e.metric_name || 'custom'
  };
  const rows = Object.keys(names)
    .filter(k => k in (e.served ?? {}))
    .map(k => ({ metric: names[k], kernel: num(e.kernel?.[k]), served: num(e.served[k]) }));
  rows.push({ metric: 'agreement', kernel: '', served: `${(100 * e.agreement).toFixed(2)} %` });
  return rows;
}

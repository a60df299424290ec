/**
 * Calls to the server extension under `{base_url}/torchserve/`. `ServerConnection` adds the
 * Jupyter token and the XSRF header, so the engine's own token never reaches the browser.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IExportOffer, IExportResult, IModelStats, IModelVersion } from './logic';

/** An error in TorchServe's shape; status 503 means "no engine running". */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    message: string
  ) {
    super(message);
  }
}

export interface IGpu {
  index: number;
  name: string;
  memory_used?: number;
  memory_total?: number;
  utilization?: number;
}

export interface IEngineStatus {
  running: boolean;
  message?: string;
  version?: string;
  pid?: number;
  started?: number;
  uptime_s?: number;
  inference_address?: string;
  management_address?: string;
  metrics_address?: string;
  grpc_inference_address?: string; // host:port; absent while gRPC is off
  grpc_management_address?: string;
  model_store?: string;
  log_dir?: string;
  gpus?: IGpu[];
  max_request_size?: number;
}

export interface IModelEntry {
  modelName: string;
  modelUrl?: string;
  versions: IModelVersion[];
  stats: IModelStats;
  error?: string;
}

export interface IOverview {
  engine: IEngineStatus;
  models: IModelEntry[];
  metrics: {
    timestamp: number;
    models: Record<string, IModelStats>;
    totals: { requests?: number; latency_ms_total?: number };
    error?: string;
  } | null;
}

export function apiUrl(path: string, query?: Record<string, string | number | undefined>): string {
  const settings = ServerConnection.makeSettings();
  let url = URLExt.join(settings.baseUrl, 'torchserve', path);
  if (query) {
    const q = Object.entries(query)
      .filter(([, v]) => v !== undefined && v !== '')
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
      .join('&');
    if (q) {
      url += '?' + q;
    }
  }
  return url;
}

/** The Jupyter server's full base URL (for curl snippets). */
export function jupyterBaseUrl(): string {
  return ServerConnection.makeSettings().baseUrl;
}

export async function request(
  path: string,
  init: RequestInit = {},
  query?: Record<string, string | number | undefined>
): Promise<Response> {
  const settings = ServerConnection.makeSettings();
  let resp: Response;
  try {
    resp = await ServerConnection.makeRequest(apiUrl(path, query), init, settings);
  } catch (e) {
    throw new ApiError(0, 'NetworkError', `Jupyter server unreachable: ${String(e)}`);
  }
  if (!resp.ok) {
    const text = await resp.text();
    let type = 'Error';
    let message = text || resp.statusText;
    try {
      const body = JSON.parse(text);
      type = body.type || type;
      message = body.message || message;
    } catch {
      // not JSON: keep the text
    }
    throw new ApiError(resp.status, type, message);
  }
  return resp;
}

export async function requestJSON<T>(
  path: string,
  init: RequestInit = {},
  query?: Record<string, string | number | undefined>
): Promise<T> {
  const resp = await request(path, init, query);
  const text = await resp.text();
  return (text ? JSON.parse(text) : {}) as T;
}

const enc = encodeURIComponent;

export const api = {
  overview: () => requestJSON<IOverview>('overview'),
  engine: () => requestJSON<IEngineStatus>('engine'),
  start: () => requestJSON<IEngineStatus>('engine', { method: 'POST', body: '{}' }),
  stop: () => requestJSON<IEngineStatus>('engine', { method: 'DELETE' }),
  store: () => requestJSON<{ archives: { url: string; size: number }[] }>('store'),
  register: (url: string, initialWorkers = 1) =>
    requestJSON<{ status: string }>(
      'models',
      { method: 'POST' },
      { url, initial_workers: initialWorkers, synchronous: 'true' }
    ),
  scale: (name: string, version: string, minWorker: number) =>
    requestJSON<{ status: string }>(
      `models/${enc(name)}/${enc(version)}`,
      { method: 'PUT' },
      { min_worker: minWorker, max_worker: Math.max(minWorker, 0), synchronous: 'true' }
    ),
  setDefault: (name: string, version: string) =>
    requestJSON<{ status: string }>(`models/${enc(name)}/${enc(version)}/set-default`, {
      method: 'PUT'
    }),
  unregister: (name: string, version?: string) =>
    requestJSON<{ status: string }>(
      version ? `models/${enc(name)}/${enc(version)}` : `models/${enc(name)}`,
      { method: 'DELETE' }
    ),
  predict: (name: string, body: Blob | string, contentType: string, version?: string) =>
    request(
      `models/${enc(name)}/predict`,
      { method: 'POST', body, headers: { 'Content-Type': contentType } },
      { version }
    ),
  /** `/explanations/{name}` through the Jupyter forwarder (the x-explanation header comes too). */
  explain: (name: string, body: Blob | string, contentType: string) =>
    request(`explanations/${enc(name)}`, {
      method: 'POST',
      body,
      headers: { 'Content-Type': contentType }
    }),
  sample: (name: string, version?: string) =>
    request(`models/${enc(name)}/sample`, {}, { version }),
  /** KServe v2 inference through the Jupyter forwarder (for an archive's v2 sample input). */
  inferV2: (name: string, body: Blob | string, version?: string) =>
    request(`v2/models/${enc(name)}${version ? `/versions/${enc(version)}` : ''}/infer`, {
      method: 'POST',
      body,
      headers: { 'Content-Type': 'application/json' }
    }),
  /** What an export may offer for this model: the targets, protocols, and Ray's "run". */
  exportTargets: (name: string) => requestJSON<IExportOffer>(`models/${enc(name)}/export`),
  /** Write the model's deployment bundle into the Jupyter root (see `exportBody`). */
  exportModel: (name: string, body: Record<string, unknown>) =>
    requestJSON<IExportResult>(`models/${enc(name)}/export`, {
      method: 'POST',
      body: JSON.stringify(body)
    }),
  logs: (name: string, tail = 200) =>
    request(`models/${enc(name)}/logs`, {}, { tail }).then(r => r.text()),
  followLogs: (name: string, tail: number, signal: AbortSignal) =>
    request(
      `models/${enc(name)}/logs`,
      { headers: { Accept: 'text/event-stream' }, signal },
      { tail, follow: 1 }
    )
};

/**
 * The Test tab's short load test: what the form sends to `torchserve/models/{m}/loadtest`
 * (the server runs `%torchserve bench`'s code) and the table it shows back.
 */

/** The rows the route answers (loadtest_view.Level.row). */
export interface ILoadTestRow {
  workers: number | null;
  concurrency: number;
  requests: number;
  req_per_s: number;
  p50_ms: number | null;
  p90_ms: number | null;
  p99_ms: number | null;
  errors: number;
  error_statuses: Record<string, number>;
  mean_batch: number | null;
  generator_cpu_cores: number;
  server_cpu_cores: number | null;
  engine_requests: number;
}

export interface ILoadTestResult {
  model: string;
  protocol: string;
  duration: number;
  rows: ILoadTestRow[];
  notes: string[];
}

/** Bounds the server also checks; checked here too so the form says why before sending. */
export const MAX_LEVELS = 6;
export const MAX_CONCURRENCY = 256;
export const MAX_DURATION_S = 30;

/** "1, 8,32" -> [1, 8, 32]; a string saying what is wrong otherwise. */
export function parseLevels(text: string): number[] | string {
  const parts = text
    .split(',')
    .map(p => p.trim())
    .filter(p => p);
  if (!parts.length) {
    return 'give one or more concurrency levels, e.g. 1,8,32';
  }
  const levels = parts.map(Number);
  if (levels.some(c => !Number.isInteger(c) || c < 1 || c > MAX_CONCURRENCY)) {
    return `each concurrency level is a whole number from 1 to ${MAX_CONCURRENCY}`;
  }
  if (levels.length > MAX_LEVELS) {
    return `at most ${MAX_LEVELS} levels`;
  }
  return levels;
}

export function checkDuration(seconds: number): string | null {
  return Number.isFinite(seconds) && seconds >= 0.5 && seconds <= MAX_DURATION_S
    ? null
    : `the duration is from 0.5 to ${MAX_DURATION_S} seconds`;
}

/** "404×3, timeout×1" for the errors cell; "0" when none. */
export function errorCell(row: ILoadTestRow): string {
  const kinds = Object.entries(row.error_statuses || {})
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k}×${n}`);
  return kinds.length ? `${row.errors} (${kinds.join(', ')})` : String(row.errors);
}

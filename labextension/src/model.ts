/**
 * The sidebar's state and its poll loop: one `overview` request per refresh interval (the
 * `refreshInterval` setting, 2 s by default, so a `%torchserve` change shows within 2 s) while
 * the engine answers, backing off to 30 s while it is gone.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { ApiError, IOverview, api } from './api';
import { ISample, REFRESH_INTERVAL, nextDelay, trimHistory } from './logic';

export class TorchServeModel {
  overview: IOverview | null = null;
  error: ApiError | null = null;
  failures = 0;
  /** Cumulative counters per model ('' = all models), one sample per poll. */
  history: Record<string, ISample[]> = {};
  lastUpdate = 0;
  /** Poll period while the engine answers (ms); see `setInterval`. */
  intervalMs: number = REFRESH_INTERVAL.defaultS * 1000;

  private _changed = new Signal<this, void>(this);
  private _timer: number | undefined;
  private _disposed = false;
  private _inFlight: Promise<void> | null = null;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get running(): boolean {
    return !!this.overview?.engine.running;
  }

  start(): void {
    if (this._timer === undefined && !this._disposed) {
      void this.refresh();
    }
  }

  /** Change the poll period (from the settings) and apply it from the next poll on. */
  setInterval(ms: number): void {
    if (ms === this.intervalMs) {
      return;
    }
    this.intervalMs = ms;
    if (!this._inFlight && this._timer !== undefined && !this._disposed) {
      window.clearTimeout(this._timer);
      this._timer = window.setTimeout(() => void this.refresh(), nextDelay(this.failures, ms));
    }
  }

  /** Poll now (after an action, or from the Refresh command) and reschedule. */
  refresh(): Promise<void> {
    if (this._inFlight) {
      return this._inFlight;
    }
    window.clearTimeout(this._timer);
    this._inFlight = this._poll().finally(() => {
      this._inFlight = null;
      if (!this._disposed) {
        this._timer = window.setTimeout(
          () => void this.refresh(),
          nextDelay(this.failures, this.intervalMs)
        );
      }
    });
    return this._inFlight;
  }

  dispose(): void {
    this._disposed = true;
    window.clearTimeout(this._timer);
    Signal.clearData(this);
  }

  private async _poll(): Promise<void> {
    try {
      const overview = await api.overview();
      this.overview = overview;
      this.error = null;
      this.failures = 0;
      this._record(overview);
    } catch (e) {
      this.error =
        e instanceof ApiError ? e : new ApiError(0, 'Error', String((e as Error).message ?? e));
      this.failures++;
      if (this.error.status === 503) {
        // the engine is gone: keep what the server said, forget the models
        this.overview = {
          engine: { running: false, message: this.error.message },
          models: [],
          metrics: null
        };
      }
    }
    this.lastUpdate = Date.now();
    this._changed.emit();
  }

  private _record(overview: IOverview): void {
    const m = overview.metrics;
    if (!m || m.error) {
      return;
    }
    const t = m.timestamp;
    const add = (key: string, requests: number, latencyTotal: number) => {
      const h = trimHistory(this.history[key] ?? [], t);
      h.push({ t, requests, latencyTotal });
      this.history[key] = h;
    };
    add('', m.totals.requests ?? 0, m.totals.latency_ms_total ?? 0);
    for (const [name, s] of Object.entries(m.models)) {
      add(name, s.requests ?? 0, s.latency_ms_total ?? 0);
    }
  }
}

/**
 * How a React view uses the `TorchServeModel`: re-render when it changes, and run a user's
 * action so that a failure is shown to the user and the model is refreshed either way.
 */
import { showErrorMessage } from '@jupyterlab/apputils';
import { useEffect, useState } from 'react';

import { ApiError } from './api';
import { TorchServeModel } from './model';

/** Re-render on every model change. */
export function useModel(model: TorchServeModel): number {
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

/**
 * Run an action; on failure show TorchServe's message in a dialog. Resolves to whether it
 * succeeded, and refreshes the model in both cases, because a failed action may still have
 * changed the engine (a partial scale, a model that failed to load).
 */
export async function act(
  what: string,
  fn: () => Promise<unknown>,
  model: TorchServeModel
): Promise<boolean> {
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

/**
 * Small widgets more than one tab draws: a labelled meter bar and the model picker.
 */
import React, { useEffect } from 'react';

import { TorchServeModel } from './model';

/** A horizontal bar with its text on top, exposed as an ARIA meter (GPU memory, scores). */
export function Bar(props: {
  label: string;
  value: number;
  max: number;
  text: string;
}): JSX.Element {
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

/**
 * A select over the registered models. It picks the first model itself while nothing is
 * chosen, so a tab opened after a deploy is ready to use without a click.
 */
export function ModelPicker(props: {
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

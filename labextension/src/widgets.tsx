/**
 * Small widgets more than one tab draws: the styled action button, a select over a list of
 * strings, the muted notes under a result, a labelled meter bar and the model picker. Each
 * keeps the class names and ARIA labels the browser tests find the sidebar by.
 */
import React, { ReactNode, useEffect } from 'react';

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
 * A JupyterLab-styled button: `kind` is its colour (accept, reject, warn) and `label` its
 * accessible name, which the browser tests click it by.
 */
export function Button(props: {
  kind: 'accept' | 'reject' | 'warn';
  label: string;
  title?: string;
  disabled?: boolean;
  onClick: () => void;
  children: ReactNode;
}): JSX.Element {
  return (
    <button
      className={`jp-Button jp-mod-styled jp-mod-${props.kind}`}
      aria-label={props.label}
      title={props.title}
      disabled={props.disabled}
      onClick={props.onClick}
    >
      {props.children}
    </button>
  );
}

/**
 * A styled select whose options are `values`, each shown as itself. `children` go before
 * them: an empty choice such as "All models".
 */
export function Select(props: {
  label: string;
  value: string;
  values: readonly string[];
  onChange: (v: string) => void;
  title?: string;
  onFocus?: () => void;
  children?: ReactNode;
}): JSX.Element {
  return (
    <select
      className="jp-mod-styled"
      aria-label={props.label}
      title={props.title}
      value={props.value}
      onFocus={props.onFocus}
      onChange={e => props.onChange(e.target.value)}
    >
      {props.children}
      {props.values.map(v => (
        <option key={v} value={v}>
          {v}
        </option>
      ))}
    </select>
  );
}

/** The muted lines under a result (the server's notes on an export or a load test). */
export function Notes(props: { notes: readonly string[] }): JSX.Element {
  return (
    <>
      {props.notes.map(n => (
        <div key={n} className="jp-TorchServe-muted">
          {n}
        </div>
      ))}
    </>
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
    <Select label={props.label} value={props.value} values={names} onChange={props.onChange}>
      {names.length === 0 && <option value="">no model</option>}
    </Select>
  );
}

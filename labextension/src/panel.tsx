/**
 * The sidebar's shell: header (engine state, Refresh), the tab strip drawn from `TABS`, and
 * the chosen tab's body, all over one `TorchServeModel`.
 */
import { ReactWidget } from '@jupyterlab/apputils';
import React from 'react';

import { IEngineStatus } from './api';
import { useModel } from './binding';
import { torchserveIcon } from './icon';
import { TorchServeModel } from './model';
import { ENGINE_TAB, TABS, TabId } from './tabs';

export function TorchServePanelView(props: {
  model: TorchServeModel;
  tab: TabId;
  onTab: (t: TabId) => void;
}): JSX.Element {
  const { model, tab } = props;
  useModel(model);
  const engine: IEngineStatus | undefined = model.overview?.engine;
  const state = !model.overview ? 'unknown' : engine?.running ? 'running' : 'stopped';
  const count = model.overview?.models.length ?? 0;
  const active = TABS.find(t => t.id === tab) ?? ENGINE_TAB;
  const Body = active.needsEngine && state === 'stopped' ? ENGINE_TAB.Component : active.Component;
  return (
    <div className="jp-TorchServe" data-state={state}>
      <header className="jp-TorchServe-header">
        <torchserveIcon.react tag="span" className="jp-TorchServe-logo" />
        <span className="jp-TorchServe-title">TorchServe</span>
        <span
          className={`jp-TorchServe-status jp-mod-${state}`}
          role="status"
          aria-label={`Engine ${state}, ${count} model${count === 1 ? '' : 's'}`}
          title={`${count} model${count === 1 ? '' : 's'} registered`}
        >
          {state}
        </span>
        <button
          className="jp-Button jp-mod-minimal jp-TorchServe-icon-button"
          aria-label="Refresh"
          title="Refresh"
          onClick={() => void model.refresh()}
        >
          ⟳
        </button>
      </header>
      {model.error && model.error.status !== 503 && (
        <div className="jp-TorchServe-error" role="alert">
          {model.error.message}
        </div>
      )}
      <div className="jp-TorchServe-tabs" role="tablist" aria-label="TorchServe sections">
        {TABS.map(t => (
          <button
            key={t.id}
            role="tab"
            id={`jp-TorchServe-tab-${t.id}`}
            aria-selected={t.id === tab}
            aria-controls={`jp-TorchServe-tabpanel-${t.id}`}
            aria-label={`${t.label} tab`}
            className={`jp-TorchServe-tab${t.id === tab ? ' jp-mod-active' : ''}`}
            onClick={() => props.onTab(t.id)}
          >
            {t.label}
          </button>
        ))}
      </div>
      <div
        className="jp-TorchServe-body"
        role="tabpanel"
        id={`jp-TorchServe-tabpanel-${tab}`}
        aria-labelledby={`jp-TorchServe-tab-${tab}`}
      >
        <Body model={model} />
      </div>
    </div>
  );
}

/** The left-area widget. */
export class TorchServePanel extends ReactWidget {
  tab: TabId = 'models';

  constructor(readonly model: TorchServeModel) {
    super();
    this.id = 'jupyter-torchserve-panel';
    this.addClass('jp-TorchServe-panel');
    this.title.icon = torchserveIcon;
    this.title.caption = 'TorchServe';
    this.node.setAttribute('aria-label', 'TorchServe sidebar');
  }

  setTab(tab: TabId): void {
    this.tab = tab;
    this.update();
  }

  protected render(): JSX.Element {
    return <TorchServePanelView model={this.model} tab={this.tab} onTab={t => this.setTab(t)} />;
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }
}

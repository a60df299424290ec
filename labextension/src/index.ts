/**
 * jupyter-torchserve: a left-area sidebar to see and steer the TorchServe engine, and its
 * commands in the command palette.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { api } from './api';
import { createDashboard } from './dashboard/DashboardPanel';
import { OPEN_DASHBOARD, dashboardOpener } from './dashboard/opener';
import { refreshIntervalMs } from './logic';
import { TorchServeModel } from './model';
import { TorchServePanel } from './panel';
import { TABS, isTabId } from './tabs';

/** Command ids (also used by the browser tests). */
export namespace CommandIDs {
  export const open = 'torchserve:open';
  export const refresh = 'torchserve:refresh';
  export const start = 'torchserve:start-engine';
  export const stop = 'torchserve:stop-engine';
  export const dashboard = OPEN_DASHBOARD;
}

const CATEGORY = 'TorchServe';

/** The argument schema (`describedBy`) of the commands that take no arguments. */
const NO_ARGS = { args: { type: 'object', properties: {} } };

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-torchserve:plugin',
  description: 'Sidebar for the jupyter_torchserve engine: models, tests, logs and metrics.',
  autoStart: true,
  optional: [ICommandPalette, ILayoutRestorer, ISettingRegistry, IRenderMimeRegistry],
  activate: (
    app: JupyterFrontEnd,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    settingRegistry: ISettingRegistry | null,
    rendermime: IRenderMimeRegistry | null
  ) => {
    const model = new TorchServeModel();
    if (settingRegistry) {
      settingRegistry
        .load(plugin.id)
        .then(settings => {
          const apply = () =>
            model.setInterval(refreshIntervalMs(settings.get('refreshInterval').composite));
          apply();
          settings.changed.connect(apply);
        })
        .catch(reason => {
          console.warn('jupyter-torchserve: settings not loaded, refreshing every 2 s', reason);
        });
    }
    const panel = new TorchServePanel(model);
    app.shell.add(panel, 'left', { rank: 900 });
    restorer?.add(panel, panel.id);
    model.start();

    app.commands.addCommand(CommandIDs.open, {
      label: args => (args.tab ? `Open TorchServe ${args.tab}` : 'Open the TorchServe sidebar'),
      caption: 'Show the TorchServe sidebar (optionally on a tab)',
      describedBy: {
        args: {
          type: 'object',
          properties: {
            tab: {
              type: 'string',
              enum: TABS.map(t => t.id),
              description: 'The tab to show; without it the panel keeps its tab'
            }
          }
        }
      },
      execute: args => {
        if (isTabId(args.tab)) {
          panel.setTab(args.tab);
        }
        app.shell.activateById(panel.id);
      }
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh TorchServe status',
      describedBy: NO_ARGS,
      execute: () => model.refresh()
    });
    app.commands.addCommand(CommandIDs.start, {
      label: 'Start the TorchServe engine',
      describedBy: NO_ARGS,
      isEnabled: () => !model.running,
      execute: async () => {
        await api.start();
        await model.refresh();
      }
    });
    app.commands.addCommand(CommandIDs.stop, {
      label: 'Stop the TorchServe engine',
      describedBy: NO_ARGS,
      isEnabled: () => model.running,
      execute: async () => {
        await api.stop();
        await model.refresh();
      }
    });
    let dashboard: MainAreaWidget | null = null;
    app.commands.addCommand(CommandIDs.dashboard, {
      label: 'Open the TorchServe dashboard',
      caption: 'Charts of the last 5/15/60 minutes: throughput, latency, queue, workers, errors',
      describedBy: NO_ARGS,
      isEnabled: () => rendermime !== null,
      execute: () => {
        if (!rendermime) {
          return;
        }
        if (!dashboard || dashboard.isDisposed) {
          dashboard = createDashboard(rendermime);
          app.shell.add(dashboard, 'main');
        }
        app.shell.activateById(dashboard.id);
      }
    });
    dashboardOpener.open = () => void app.commands.execute(CommandIDs.dashboard);
    model.changed.connect(() => app.commands.notifyCommandChanged());

    if (palette) {
      for (const command of [
        CommandIDs.open,
        CommandIDs.refresh,
        CommandIDs.start,
        CommandIDs.stop,
        CommandIDs.dashboard
      ]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
  }
};

export default plugin;

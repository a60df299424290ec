/**
 * The sidebar's tabs, in the order of the tab strip: one row a tab, so ids, labels and which
 * tabs need a running engine read in one place. Adding a tab: write `tabs/<Name>Tab.tsx`
 * exporting its component, and add its row here.
 */
import { EngineTab } from './EngineTab';
import { LogsTab } from './LogsTab';
import { MetricsTab } from './MetricsTab';
import { ModelsTab } from './ModelsTab';
import { TestTab } from './TestTab';
import { ITab } from './tab';

/** Shown in place of any tab that needs the engine while it is stopped (its Start button). */
export const ENGINE_TAB = {
  id: 'engine',
  label: 'Engine',
  needsEngine: false,
  Component: EngineTab
} as const satisfies ITab;

export const TABS = [
  ENGINE_TAB,
  { id: 'models', label: 'Models', needsEngine: true, Component: ModelsTab },
  { id: 'test', label: 'Test', needsEngine: true, Component: TestTab },
  { id: 'logs', label: 'Logs', needsEngine: true, Component: LogsTab },
  { id: 'metrics', label: 'Metrics', needsEngine: true, Component: MetricsTab }
] as const satisfies readonly ITab[];

export type TabId = (typeof TABS)[number]['id'];

/** Whether a command argument (`torchserve:open`'s `tab`) names one of the tabs. */
export function isTabId(id: unknown): id is TabId {
  return TABS.some(t => t.id === id);
}

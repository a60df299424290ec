/**
 * The sidebar's tabs, in the order of the tab strip. Adding a tab: write `tabs/<Name>Tab.tsx`
 * exporting an `ITab`, and list it here.
 */
import { engineTab } from './EngineTab';
import { logsTab } from './LogsTab';
import { metricsTab } from './MetricsTab';
import { modelsTab } from './ModelsTab';
import { testTab } from './TestTab';

export const TABS = [engineTab, modelsTab, testTab, logsTab, metricsTab] as const;

export type TabId = (typeof TABS)[number]['id'];

/** Whether a command argument (`torchserve:open`'s `tab`) names one of the tabs. */
export function isTabId(id: unknown): id is TabId {
  return TABS.some(t => t.id === id);
}

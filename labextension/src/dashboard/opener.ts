/**
 * How sidebar code opens the dashboard without holding the application: the plugin sets
 * `open` when it registers the command (index.ts), and the Metrics tab's button calls it.
 */
export const dashboardOpener: { open: (() => void) | null } = { open: null };

/** The command id, also used by the browser tests. */
export const OPEN_DASHBOARD = 'torchserve:open-dashboard';

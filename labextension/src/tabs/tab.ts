/**
 * What a sidebar tab is: the panel shell draws the tab strip from these records and renders
 * the chosen one's component, so a new tab is a new file plus one line in `tabs/index.ts`.
 */
import { TorchServeModel } from '../model';

/** Every tab renders from the one shared model (state and polling live there, not in tabs). */
export interface ITabProps {
  model: TorchServeModel;
}

export interface ITab<Id extends string = string> {
  /** Stable id: the `tab` argument of the `torchserve:open` command and the DOM ids. */
  readonly id: Id;
  /** The tab strip's label. */
  readonly label: string;
  /**
   * A tab that only makes sense against a running engine: while the engine is stopped the
   * panel shows the Engine tab (with its Start button) in its place.
   */
  readonly needsEngine: boolean;
  readonly Component: (props: ITabProps) => JSX.Element;
}

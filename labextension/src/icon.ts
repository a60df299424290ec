/** The sidebar's own icon (a flame over a server rack), themed through `jp-icon3`. */
import { LabIcon } from '@jupyterlab/ui-components';

import svg from '../style/icons/torchserve.svg';

export const torchserveIcon = new LabIcon({ name: 'jupyter-torchserve:icon', svgstr: svg });

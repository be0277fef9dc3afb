import { LabIcon } from '@jupyterlab/ui-components';

import tasksSvg from '../style/icons/tasks.svg';

/** The sidebar tab icon: a task list with a tick. */
export const tasksIcon = new LabIcon({
  name: 'jupyter-taskrun:tasks',
  svgstr: tasksSvg
});

import { LabIcon } from '@jupyterlab/ui-components';

import scheduleSvg from '../style/icons/schedule.svg';
import tasksSvg from '../style/icons/tasks.svg';

/** The sidebar tab icon: a task list with a tick. */
export const tasksIcon = new LabIcon({
  name: 'jupyter-taskrun:tasks',
  svgstr: tasksSvg
});

/** Schedules: a clock. */
export const scheduleIcon = new LabIcon({
  name: 'jupyter-taskrun:schedule',
  svgstr: scheduleSvg
});

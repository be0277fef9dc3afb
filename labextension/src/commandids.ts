/**
 * The ids of the commands this extension adds (palette, menus, context
 * menus, `app.commands.execute`). Stable: other extensions may call them.
 */
export namespace CommandIDs {
  export const openPanel = 'taskrun:open-panel';
  export const openTask = 'taskrun:open-task';
  export const refresh = 'taskrun:refresh';
  export const openSelected = 'taskrun:open-selected';
  export const cancelSelected = 'taskrun:cancel-selected';
  export const rerunSelected = 'taskrun:rerun-selected';
  export const deleteSelected = 'taskrun:delete-selected';
  export const clearFinished = 'taskrun:clear-finished';
  /** `{path}`: open a saved executed notebook as a record, without a kernel */
  export const openExecutedNotebook = 'taskrun:open-executed-notebook';
  export const runNotebook = 'taskrun:run-notebook';
  export const runCells = 'taskrun:run-cells';
  export const runFile = 'taskrun:run-file';
  /** `{path?}`: create a schedule for a .ipynb / .py file (the file browser selection when omitted) */
  export const scheduleFile = 'taskrun:schedule-file';
  /** create a schedule for the active notebook (its saved file) */
  export const scheduleNotebook = 'taskrun:schedule-notebook';
  /** show the Schedules view of the Tasks sidebar */
  export const showSchedules = 'taskrun:show-schedules';
  /** `{tag}` or `{schedule}`: tasks side by side (the selected task's tag, or asks, when omitted) */
  export const compare = 'taskrun:compare';
}

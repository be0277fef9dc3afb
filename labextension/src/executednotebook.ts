/**
 * Saving a task's executed notebook into the workspace, under the one name
 * format.ts gives it (shared by the detail view and the commands).
 */
import { APIError, TaskAPI } from './api';
import { executedNotebookName } from './format';
import { ITask } from './models';

/** Where "Open executed notebook" saves the notebook in the workspace. */
export function executedNotebookPath(task: ITask): string {
  // next to the task's notebook or script; the server root otherwise
  const path = task.path ?? '';
  const dir = path.slice(0, path.lastIndexOf('/') + 1);
  return `${dir}${executedNotebookName(task.name || task.path, task.id)}`;
}

/**
 * Save it (once: a second click finds it there) next to the task's file, or at
 * the root when that folder is refused, like the notebook panel; the saved path.
 */
export async function saveExecutedNotebook(task: ITask): Promise<string> {
  const path = executedNotebookPath(task);
  const name = executedNotebookName(task.name || task.path, task.id);
  let saved: { path: string };
  try {
    saved = await TaskAPI.saveNotebook(task.id, path);
  } catch (error) {
    const folderRefused =
      error instanceof APIError &&
      path !== name &&
      [400, 403, 404].includes(error.status);
    if (!folderRefused) {
      throw error;
    }
    saved = await TaskAPI.saveNotebook(task.id, name);
  }
  return saved?.path || path;
}

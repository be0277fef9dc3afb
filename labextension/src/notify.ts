/**
 * Notifications of task ends (Lab's Notification API), from the global
 * change feed the list model follows, for tasks from any client: those
 * submitted from this page, and — with the `notifyOtherClients` setting —
 * those from %%taskrun, the CLI, REST or a schedule. The `notifications`
 * setting picks all ends, failures (and time-outs) only, or none; both apply
 * live. Each notification offers *Open* (the detail view) and *Rerun*.
 *
 * Guarantees: at most one notification per task end, and none for a task
 * whose first sight is already final (unless it was started from this page:
 * its end is announced after a reload too, see notices.ts).
 */
import { Notification } from '@jupyterlab/apputils';

import { TaskAPI } from './api';
import { trans } from './i18n';
import { isTerminal, ITask } from './models';
import { settings } from './settings';
import type { TaskListModel } from './tasklist';

/** tasks remembered as seen unfinished (the oldest are forgotten) */
const MAX_WATCHED = 5000;

export interface INotifierOptions {
  model: TaskListModel;
  openTask: (id: string) => void;
  reportError: (title: string, error: unknown) => void;
}

export class TaskNotifier {
  constructor(options: INotifierOptions) {
    this._options = options;
    const { model } = options;
    // tasks started here (and remembered across reloads): the model's news
    model.taskFinished.connect((_, task) => {
      if (model.isTracked(task.id)) {
        this._end(task, true);
      }
    });
    // any task seen unfinished on the feed, whether the list shows it or not
    model.taskChanged.connect((_, task) => {
      if (!isTerminal(task.status)) {
        this._watched.add(task.id);
        if (this._watched.size > MAX_WATCHED) {
          const oldest = this._watched.values().next().value;
          if (oldest !== undefined) {
            this._watched.delete(oldest);
          }
        }
      } else if (this._watched.delete(task.id)) {
        this._end(task, false);
      }
    });
  }

  private _end(task: ITask, startedHere: boolean): void {
    if (this._announced.has(task.id)) {
      return;
    }
    this._announced.add(task.id);
    this._watched.delete(task.id);
    const { notifications, notifyOtherClients } = settings.current;
    const failed = task.status === 'failed' || task.status === 'timed_out';
    if (
      notifications === 'none' ||
      (notifications === 'failed' && !failed) ||
      (!startedHere && !notifyOtherClients)
    ) {
      return;
    }
    const { openTask, model, reportError } = this._options;
    const actions = [
      { label: trans.__('Open'), callback: () => openTask(task.id) },
      {
        label: trans.__('Rerun'),
        callback: () => {
          TaskAPI.rerun(task.id)
            .then(t => model.track(t))
            .catch(error => reportError(trans.__('Rerun failed'), error));
        }
      }
    ];
    const name = task.name || task.id;
    switch (task.status) {
      case 'completed':
        Notification.success(trans.__('Task “%1” completed', name), {
          autoClose: 8000,
          actions
        });
        break;
      case 'failed': {
        const why = task.error?.ename
          ? `: ${task.error.ename}`
          : task.error?.reason
            ? `: ${task.error.reason}`
            : '';
        Notification.error(trans.__('Task “%1” failed%2', name, why), {
          autoClose: 15000,
          actions
        });
        break;
      }
      case 'timed_out':
        Notification.error(trans.__('Task “%1” timed out', name), {
          autoClose: 15000,
          actions
        });
        break;
      default:
        Notification.info(trans.__('Task “%1” was cancelled', name), {
          autoClose: 5000,
          actions
        });
    }
  }

  private _options: INotifierOptions;
  private _watched = new Set<string>();
  private _announced = new Set<string>();
}

/**
 * A "Tasks" section of Lab's Running panel (IRunningSessionManagers): the
 * queued and running tasks of the list model, each with open (the detail
 * view) and shut down (cancel), and "cancel all".
 *
 * Guarantees: the section follows the live model (the change feed): a task
 * appears when it is queued or starts and leaves when it ends, whatever the
 * sidebar's filters show; a refresh of the section (and the start) re-reads
 * every queued and running task (up to 500 of each) from the server.
 */
import type {
  IRunningSessionManagers,
  IRunningSessions
} from '@jupyterlab/running';
import type { IDisposable } from '@lumino/disposable';
import { Signal } from '@lumino/signaling';

import { TaskAPI } from './api';
import { confirmCancel } from './cascade';
import { formatDuration } from './format';
import { trans } from './i18n';
import { tasksIcon } from './icons';
import { isTerminal, ITask } from './models';
import type { TaskListModel } from './tasklist';
import { formatTime, taskDuration } from './utils';

export interface IRunningTasksOptions {
  model: TaskListModel;
  openTask: (id: string) => void;
  reportError: (title: string, error: unknown) => void;
}

export function addRunningTasks(
  managers: IRunningSessionManagers,
  options: IRunningTasksOptions
): IDisposable {
  const { model, openTask, reportError } = options;
  const changed = new Signal<object, void>(model);
  // every task seen unfinished (the feed, the list's pages, a refresh of the
  // section), whatever the sidebar's filters show
  const live = new Map<string, ITask>();
  let key = '';
  const unfinished = (): ITask[] => [...live.values()];
  const onChange = () => {
    const next = unfinished()
      .map(t => `${t.id}:${t.status}`)
      .join(',');
    if (next !== key) {
      key = next;
      changed.emit();
    }
  };
  const note = (task: ITask) => {
    if (isTerminal(task.status)) {
      live.delete(task.id);
    } else {
      live.set(task.id, task);
    }
  };
  model.taskChanged.connect((_, task) => {
    note(task);
    onChange();
  });
  model.taskDeleted.connect((_, id) => {
    live.delete(id);
    onChange();
  });
  const cancel = async (task: ITask) => {
    try {
      const done = await confirmCancel(task.id, task.name); // asks about waiting dependents
      if (done) {
        model.upsert(done);
      }
    } catch (error) {
      reportError(trans.__('Cancel failed'), error);
    }
  };
  const manager: IRunningSessions.IManager = {
    name: trans.__('Tasks'),
    supportsMultipleViews: false,
    running: () =>
      unfinished().map(task => ({
        className: `jp-TaskRun-runningItem jp-mod-${task.status}`,
        context: task.id,
        icon: () => tasksIcon,
        label: () => task.name || task.id,
        labelTitle: () =>
          [
            `${task.name} (${task.id})`,
            trans.__('Created: %1', formatTime(task.created_at)),
            task.owner ? trans.__('Owner: %1', task.owner) : ''
          ]
            .filter(Boolean)
            .join('\n'),
        detail: () => {
          const duration = taskDuration(task);
          return task.status === 'queued'
            ? trans.__('queued')
            : duration === null
              ? trans.__('running')
              : formatDuration(duration);
        },
        open: () => openTask(task.id),
        shutdown: () => void cancel(task)
      })),
    shutdownAll: () => {
      for (const task of unfinished()) {
        void cancel(task);
      }
    },
    refreshRunning: () => {
      void Promise.all([
        TaskAPI.list({ status: 'running', limit: 500 }),
        TaskAPI.list({ status: 'queued', limit: 500 })
      ])
        .then(pages => {
          live.clear();
          pages.forEach(p => p.tasks.forEach(note));
          onChange();
        })
        .catch(() => undefined); // the next change of the feed refreshes
    },
    runningChanged: changed,
    shutdownLabel: trans.__('Cancel Task'),
    shutdownAllLabel: trans.__('Cancel All'),
    shutdownAllConfirmationText: () =>
      trans.__('Cancel all the queued and running tasks listed?')
  };
  manager.refreshRunning();
  return managers.add(manager);
}

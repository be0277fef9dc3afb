/**
 * The "Schedule…" commands: on a .ipynb or .py file of the file browser
 * (its context menu) and on the active notebook (a toolbar button and the
 * palette), plus "Show Schedules". A schedule always runs the saved file by
 * path, so each run sees the file as it is then. The dialog
 * (scheduledialog.ts) loads on first use; `editSchedule` opens it for an
 * existing schedule (the Schedules view's Edit button).
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';

import { CommandIDs } from './commandids';
import { trans } from './i18n';
import { scheduleIcon } from './icons';
import type { ISchedule, ITaskSubmission } from './models';
import type { ScheduleListModel } from './schedulemodel';
import type { SubmitKind } from './submitform';

const SCHEDULABLE = /\.(py|ipynb)$/i;
const isScript = (path: string): boolean => /\.py$/i.test(path);

export interface IScheduleCommandsOptions {
  scheduleModel: ScheduleListModel;
  notebooks: INotebookTracker | null;
  browsers: IFileBrowserFactory | null;
  /** Reveal the sidebar's Schedules view. */
  showSchedules: () => void;
  reportError: (title: string, error: unknown) => void;
}

/** A command without arguments, for `describedBy`. */
const NO_ARGS = { args: { type: 'object' as const, properties: {} } };

export function addScheduleCommands(
  app: JupyterFrontEnd,
  options: IScheduleCommandsOptions
): { editSchedule: (schedule: ISchedule) => void } {
  const { commands, serviceManager } = app;
  const { scheduleModel, notebooks, browsers, showSchedules, reportError } =
    options;
  const localPath = (path: string): string =>
    serviceManager.contents.localPath(path);

  const announce = (schedule: ISchedule, created: boolean) => {
    const text = created
      ? trans.__(
          'Schedule “%1” created: %2',
          schedule.name,
          schedule.description
        )
      : trans.__(
          'Schedule “%1” saved: %2',
          schedule.name,
          schedule.description
        );
    Notification.success(text, {
      autoClose: 6000,
      actions: [{ label: trans.__('Show'), callback: showSchedules }]
    });
  };

  const scheduleFile = async (path: string, note = ''): Promise<void> => {
    const { editSchedule } = await import('./scheduledialog');
    const base = PathExt.basename(path);
    const task: ITaskSubmission = { path };
    const schedule = await editSchedule({
      model: scheduleModel,
      task,
      description:
        trans.__(
          'Runs the saved file %1 in a fresh kernel at each time.',
          path
        ) + (note ? ` ${note}` : ''),
      defaultName: base.replace(/\.ipynb$/i, ''),
      kind: isScript(path) ? 'script' : 'notebook'
    });
    if (schedule) {
      announce(schedule, true);
    }
  };

  const editSchedule = (schedule: ISchedule): void => {
    const run = async () => {
      const { editSchedule: ask } = await import('./scheduledialog');
      const task = schedule.task;
      const kind: SubmitKind = task.cells
        ? 'cells'
        : task.code || (task.path && isScript(task.path))
          ? 'script'
          : 'notebook';
      const saved = await ask({
        model: scheduleModel,
        schedule,
        description: task.path
          ? trans.__(
              'Runs the saved file %1 in a fresh kernel at each time.',
              task.path
            )
          : trans.__('Runs its code in a fresh kernel at each time.'),
        defaultName: schedule.name,
        kind
      });
      if (saved) {
        announce(saved, false);
      }
    };
    run().catch(error =>
      reportError(trans.__('The schedule was not saved'), error)
    );
  };

  const selectedFile = (): string | null => {
    const browser = browsers?.tracker.currentWidget ?? null;
    if (!browser) {
      return null;
    }
    const items = Array.from(browser.selectedItems()).filter(
      item => item.type !== 'directory' && SCHEDULABLE.test(item.path)
    );
    return items.length === 1 ? localPath(items[0].path) : null;
  };

  commands.addCommand(CommandIDs.scheduleFile, {
    label: args =>
      args.path
        ? trans.__('Schedule %1…', PathExt.basename(String(args.path)))
        : trans.__('Schedule…'),
    caption: trans.__(
      'Run the selected .ipynb notebook or .py script as a task on a schedule (cron)'
    ),
    icon: scheduleIcon,
    describedBy: {
      args: {
        type: 'object',
        properties: {
          path: {
            type: 'string',
            description: trans.__(
              'The file to schedule (server path); the file browser selection when omitted'
            )
          }
        }
      }
    },
    isVisible: args => !!args.path || selectedFile() !== null,
    execute: args => {
      const path = args.path ? String(args.path) : selectedFile();
      if (!path) {
        return;
      }
      return scheduleFile(path).catch(error =>
        reportError(trans.__('The schedule was not saved'), error)
      );
    }
  });

  const currentNotebook = (): NotebookPanel | null =>
    notebooks?.currentWidget ?? null;

  const scheduleNotebook = (panel: NotebookPanel) => {
    const path = localPath(panel.context.path);
    const note = panel.context.model.dirty
      ? trans.__('Unsaved changes are not included: save the notebook first.')
      : '';
    return scheduleFile(path, note).catch(error =>
      reportError(trans.__('The schedule was not saved'), error)
    );
  };

  commands.addCommand(CommandIDs.scheduleNotebook, {
    label: trans.__('Schedule Notebook…'),
    caption: trans.__('Run the saved notebook as a task on a schedule (cron)'),
    icon: scheduleIcon,
    describedBy: NO_ARGS,
    isEnabled: () => currentNotebook() !== null,
    execute: () => {
      const panel = currentNotebook();
      return panel ? scheduleNotebook(panel) : undefined;
    }
  });

  commands.addCommand(CommandIDs.showSchedules, {
    label: trans.__('Show Schedules'),
    caption: trans.__('Show the schedules in the Tasks sidebar'),
    icon: scheduleIcon,
    describedBy: NO_ARGS,
    execute: () => showSchedules()
  });

  if (notebooks) {
    // the notebook toolbar's button and the file browser's context menu
    // entry are declared in schema/plugin.json
    notebooks.currentChanged.connect(() =>
      commands.notifyCommandChanged(CommandIDs.scheduleNotebook)
    );
  }

  return { editSchedule };
}

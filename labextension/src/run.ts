/**
 * The "Run as Task" commands: the active notebook (a saved one by path, an
 * unsaved one by content), its selected code cells, and .py/.ipynb files
 * selected in the file browser. Each asks for the options first (the dialog
 * of submit.ts, loaded on first use) and tracks the new task, so that its end
 * is notified in this Lab.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification, showErrorMessage } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import type { PartialJSONObject } from '@lumino/coreutils';

import { TaskAPI } from './api';
import { CommandIDs } from './commandids';
import { trans } from './i18n';
import { tasksIcon } from './icons';
import { ITask, ITaskSubmission } from './models';
import type { SubmitKind } from './submitform';
import type { TaskListModel } from './tasklist';

const RUNNABLE = /\.(py|ipynb)$/i;
const isScript = (path: string): boolean => /\.py$/i.test(path);

/** What the options dialog shows, and the files whose last values it remembers. */
interface IDialogText {
  title: string;
  description: string;
  name: string;
  kernel: string;
  kind: SubmitKind;
  rememberKeys: string[];
}

/** A command without arguments, for `describedBy`. */
const NO_ARGS = { args: { type: 'object' as const, properties: {} } };

export interface IRunCommandsOptions {
  model: TaskListModel;
  notebooks: INotebookTracker | null;
  browsers: IFileBrowserFactory | null;
  openTask: (id: string) => void;
  reportError: (title: string, error: unknown) => void;
}

export function addRunCommands(
  app: JupyterFrontEnd,
  options: IRunCommandsOptions
): void {
  const { commands, serviceManager } = app;
  const { model, notebooks, browsers, openTask, reportError } = options;

  const askOptions = async (dialog: IDialogText) => {
    const { askSubmitOptions } = await import('./submit');
    return askSubmitOptions({
      title: dialog.title,
      description: dialog.description,
      defaultName: dialog.name,
      defaultKernel: dialog.kernel,
      kernelspecs: serviceManager.kernelspecs.specs,
      kind: dialog.kind,
      rememberKeys: dialog.rememberKeys
    });
  };

  const notifySubmitted = (created: ITask[]): void => {
    const task = created[0];
    Notification.info(
      created.length === 1
        ? trans.__('Task “%1” submitted', task.name)
        : trans.__('%1 tasks submitted', created.length),
      {
        autoClose: 4000,
        actions: [
          { label: trans.__('Open'), callback: () => openTask(task.id) }
        ]
      }
    );
  };

  const submit = async (
    source: ITaskSubmission,
    dialog: IDialogText
  ): Promise<ITask | null> => {
    const chosen = await askOptions(dialog);
    if (!chosen) {
      return null;
    }
    try {
      const task = await TaskAPI.submit({ ...source, ...chosen });
      model.track(task);
      notifySubmitted([task]);
      return task;
    } catch (error) {
      reportError(trans.__('Could not submit the task'), error);
      return null;
    }
  };

  const currentNotebook = (): NotebookPanel | null =>
    notebooks?.currentWidget ?? null;

  const notebookKernel = (panel: NotebookPanel): string => {
    const spec = panel.context.model.getMetadata('kernelspec') as
      { name?: string } | undefined;
    return spec?.name ?? panel.sessionContext.kernelPreference.name ?? '';
  };

  const localPath = (path: string): string =>
    serviceManager.contents.localPath(path);

  commands.addCommand(CommandIDs.runNotebook, {
    label: trans.__('Run Notebook as Task'),
    caption: trans.__(
      'Run the active notebook as a background task in a fresh kernel'
    ),
    icon: tasksIcon,
    describedBy: NO_ARGS,
    isEnabled: () => currentNotebook() !== null,
    execute: async () => {
      const nb = currentNotebook();
      if (!nb) {
        return null;
      }
      await nb.context.ready;
      const path = localPath(nb.context.path);
      const saved =
        !nb.context.model.dirty && nb.context.contentsModel !== null;
      const source: ITaskSubmission = saved
        ? { path }
        : {
            notebook: nb.context.model.toJSON() as unknown as PartialJSONObject
          };
      return submit(source, {
        title: trans.__('Run Notebook as Task'),
        description: saved
          ? trans.__('Runs the saved notebook %1 in a fresh kernel.', path)
          : trans.__(
              'Runs the current (unsaved) content of %1 in a fresh kernel.',
              path
            ),
        name: PathExt.basename(path).replace(/\.ipynb$/i, ''),
        kernel: notebookKernel(nb),
        kind: 'notebook',
        rememberKeys: [path]
      });
    }
  });

  commands.addCommand(CommandIDs.runCells, {
    label: trans.__('Run Selected Cells as Task'),
    caption: trans.__(
      'Run the selected code cells, in order, as one background task'
    ),
    icon: tasksIcon,
    describedBy: NO_ARGS,
    isEnabled: () => currentNotebook() !== null,
    execute: async () => {
      const nb = currentNotebook();
      if (!nb) {
        return null;
      }
      const notebook = nb.content;
      const cells = notebook.widgets
        .filter(
          cell =>
            notebook.isSelectedOrActive(cell) && cell.model.type === 'code'
        )
        .map(cell => cell.model.sharedModel.getSource());
      if (!cells.length) {
        void showErrorMessage(
          trans.__('Run Selected Cells as Task'),
          trans.__('Select at least one code cell.')
        );
        return null;
      }
      const base = PathExt.basename(nb.context.path).replace(/\.ipynb$/i, '');
      return submit(
        { cells },
        {
          title: trans.__('Run Selected Cells as Task'),
          description: trans._n(
            'Runs %1 selected cell of %2 in a fresh kernel.',
            'Runs %1 selected cells of %2 in a fresh kernel.',
            cells.length,
            base
          ),
          name: trans._n('%2 (%1 cell)', '%2 (%1 cells)', cells.length, base),
          kernel: notebookKernel(nb),
          kind: 'cells',
          // the cells of a notebook remember apart from the whole notebook
          rememberKeys: [`cells:${localPath(nb.context.path)}`]
        }
      );
    }
  });

  const selectedFiles = (): string[] => {
    const browser = browsers?.tracker.currentWidget ?? null;
    if (!browser) {
      return [];
    }
    return Array.from(browser.selectedItems())
      .filter(item => item.type !== 'directory' && RUNNABLE.test(item.path))
      .map(item => localPath(item.path));
  };

  commands.addCommand(CommandIDs.runFile, {
    label: args =>
      args.path
        ? trans.__('Run %1 as Task', PathExt.basename(String(args.path)))
        : trans.__('Run as Task'),
    caption: trans.__(
      'Run the selected .py script or .ipynb notebook as a background task'
    ),
    icon: tasksIcon,
    describedBy: {
      args: {
        type: 'object',
        properties: {
          path: {
            type: 'string',
            description: trans.__(
              'The file to run (server path); the file browser selection when omitted'
            )
          }
        }
      }
    },
    isVisible: args => !!args.path || selectedFiles().length > 0,
    execute: async args => {
      const paths = args.path ? [String(args.path)] : selectedFiles();
      if (!paths.length) {
        return null;
      }
      const first = paths[0];
      const chosen = await askOptions({
        title: trans.__('Run as Task'),
        description:
          paths.length === 1
            ? trans.__('Runs %1 in a fresh kernel.', first)
            : trans.__('Runs %1 files, each as its own task.', paths.length),
        name: paths.length === 1 ? PathExt.basename(first) : '',
        kernel: '',
        kind: paths.every(isScript)
          ? 'script'
          : paths.some(isScript)
            ? 'files'
            : 'notebook',
        rememberKeys: paths
      });
      if (!chosen) {
        return null;
      }
      const created: ITask[] = [];
      for (const path of paths) {
        const base = PathExt.basename(path);
        const name =
          paths.length === 1
            ? chosen.name
            : chosen.name
              ? `${chosen.name} ${base}`
              : base;
        // arguments are a script's: a notebook refuses them
        const { args, ...common } = chosen;
        const options = isScript(path) && args ? { ...common, args } : common;
        try {
          const task = await TaskAPI.submit({ path, ...options, name });
          model.track(task);
          created.push(task);
        } catch (error) {
          reportError(trans.__('Could not submit %1', path), error);
        }
      }
      if (created.length) {
        notifySubmitted(created);
      }
      return created.length === 1 ? created[0] : created;
    }
  });

  if (notebooks) {
    notebooks.currentChanged.connect(() => {
      commands.notifyCommandChanged(CommandIDs.runNotebook);
      commands.notifyCommandChanged(CommandIDs.runCells);
    });
  }
}

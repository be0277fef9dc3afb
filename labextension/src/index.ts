/**
 * jupyter-taskrun: the JupyterLab side of jupyter_taskrun.
 *
 * A "Tasks" panel in the left sidebar, a detail view per task in the main
 * area, "Run as Task" commands (notebook, selected cells, files), a status-bar
 * item and notifications for tasks started from this Lab.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Dialog,
  ICommandPalette,
  MainAreaWidget,
  Notification,
  showDialog,
  showErrorMessage,
  WidgetTracker
} from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator } from '@jupyterlab/translation';
import type { PartialJSONObject } from '@lumino/coreutils';

import { setServerSettings, TaskAPI } from './api';
import { createDetailWidget, TaskDetail } from './detail';
import { setTranslator, trans } from './i18n';
import { tasksIcon } from './icons';
import { isTerminal, ITask, ITaskSubmission } from './models';
import { TaskPanel } from './panel';
import { TaskStatusItem } from './statusbar';
import { askSubmitOptions } from './submit';
import { TaskListModel } from './tasklist';

export * from './models';
export { requestAPI, TaskAPI } from './api';

export namespace CommandIDs {
  export const openPanel = 'taskrun:open-panel';
  export const openTask = 'taskrun:open-task';
  export const refresh = 'taskrun:refresh';
  export const openSelected = 'taskrun:open-selected';
  export const cancelSelected = 'taskrun:cancel-selected';
  export const rerunSelected = 'taskrun:rerun-selected';
  export const deleteSelected = 'taskrun:delete-selected';
  export const runNotebook = 'taskrun:run-notebook';
  export const runCells = 'taskrun:run-cells';
  export const runFile = 'taskrun:run-file';
}

const PALETTE_CATEGORY = 'Tasks';
const RUNNABLE = /\.(py|ipynb)$/i;

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-taskrun:plugin',
  description:
    'Tasks panel, task detail views and "Run as Task" commands for jupyter_taskrun.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [
    ICommandPalette,
    ILayoutRestorer,
    IStatusBar,
    INotebookTracker,
    IFileBrowserFactory,
    IDocumentManager,
    ITranslator
  ],
  activate: (
    app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    statusBar: IStatusBar | null,
    notebooks: INotebookTracker | null,
    browsers: IFileBrowserFactory | null,
    docManager: IDocumentManager | null,
    translator: ITranslator | null
  ) => {
    setTranslator(translator);
    const { commands, shell, serviceManager } = app;
    setServerSettings(serviceManager.serverSettings);

    const model = new TaskListModel();
    const tracker = new WidgetTracker<MainAreaWidget<TaskDetail>>({
      namespace: 'jupyter-taskrun'
    });

    const reportError = (title: string, error: unknown) => {
      let message = error instanceof Error ? error.message : String(error);
      if (model.offline || /failed to fetch|networkerror/i.test(message)) {
        // say why, and what happens next, rather than "Failed to fetch"
        message = trans.__(
          'The server is not answering (%1). The Tasks panel reconnects by itself as soon as it is back; try again then.',
          message
        );
        model.reconnect();
      }
      void showErrorMessage(title, message);
    };

    const openPath = async (path: string): Promise<void> => {
      if (docManager) {
        docManager.openOrReveal(path);
      } else {
        await commands.execute('docmanager:open', { path });
      }
    };

    // one tab per task: a second open (double click, notification, command,
    // restored layout) reveals the tab already there
    const openTabs = new Map<string, MainAreaWidget<TaskDetail>>();
    const openTask = (id: string): void => {
      const existing =
        openTabs.get(id) ?? tracker.find(w => w.content.taskId === id);
      if (existing && !existing.isDisposed) {
        if (!existing.isAttached) {
          shell.add(existing, 'main');
        }
        shell.activateById(existing.id);
        return;
      }
      const widget = createDetailWidget({
        taskId: id,
        model,
        rendermime,
        openPath,
        openTask,
        onError: reportError
      });
      openTabs.set(id, widget);
      widget.disposed.connect(() => {
        if (openTabs.get(id) === widget) {
          openTabs.delete(id);
        }
      });
      void tracker.add(widget);
      shell.add(widget, 'main');
      shell.activateById(widget.id);
    };

    // ------------------------------------------------------------- sidebar
    const panel = new TaskPanel({ model, openTask, onError: reportError });
    panel.title.caption = 'Tasks';
    shell.add(panel, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(panel, 'jupyter-taskrun-panel');
      void restorer.restore(tracker, {
        command: CommandIDs.openTask,
        args: w => ({ id: w.content.taskId }),
        name: w => w.content.taskId
      });
    }
    model.start();

    // ------------------------------------------------------- notifications
    model.taskFinished.connect((_, task) => {
      if (!model.isTracked(task.id)) {
        return;
      }
      const actions = [
        { label: 'Open', callback: () => openTask(task.id) }
      ];
      const name = task.name || task.id;
      switch (task.status) {
        case 'completed':
          Notification.success(`Task “${name}” completed`, {
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
          Notification.error(`Task “${name}” failed${why}`, {
            autoClose: 15000,
            actions
          });
          break;
        }
        case 'timed_out':
          Notification.error(`Task “${name}” timed out`, {
            autoClose: 15000,
            actions
          });
          break;
        default:
          Notification.info(`Task “${name}” was cancelled`, {
            autoClose: 5000,
            actions
          });
      }
    });

    // ----------------------------------------------------------- submitting
    const submit = async (
      source: ITaskSubmission,
      dialog: { title: string; description: string; name: string; kernel: string }
    ): Promise<ITask | null> => {
      const options = await askSubmitOptions({
        title: dialog.title,
        description: dialog.description,
        defaultName: dialog.name,
        defaultKernel: dialog.kernel,
        kernelspecs: serviceManager.kernelspecs.specs
      });
      if (!options) {
        return null;
      }
      try {
        const task = await TaskAPI.submit({ ...source, ...options });
        model.track(task);
        Notification.info(`Task “${task.name}” submitted`, {
          autoClose: 4000,
          actions: [{ label: 'Open', callback: () => openTask(task.id) }]
        });
        return task;
      } catch (error) {
        reportError('Could not submit the task', error);
        return null;
      }
    };

    const currentNotebook = (): NotebookPanel | null =>
      notebooks?.currentWidget ?? null;

    const notebookKernel = (panel: NotebookPanel): string => {
      const spec = panel.context.model.getMetadata('kernelspec') as
        | { name?: string }
        | undefined;
      return (
        spec?.name ?? panel.sessionContext.kernelPreference.name ?? ''
      );
    };

    const localPath = (path: string): string =>
      serviceManager.contents.localPath(path);

    commands.addCommand(CommandIDs.runNotebook, {
      label: 'Run Notebook as Task',
      caption: 'Run the active notebook as a background task in a fresh kernel',
      icon: tasksIcon,
      isEnabled: () => currentNotebook() !== null,
      execute: async () => {
        const nb = currentNotebook();
        if (!nb) {
          return null;
        }
        await nb.context.ready;
        const path = localPath(nb.context.path);
        const saved = !nb.context.model.dirty && nb.context.contentsModel !== null;
        const source: ITaskSubmission = saved
          ? { path }
          : {
              notebook: nb.context.model.toJSON() as unknown as PartialJSONObject
            };
        const name = PathExt.basename(path).replace(/\.ipynb$/i, '');
        return submit(source, {
          title: 'Run Notebook as Task',
          description: saved
            ? `Runs the saved notebook ${path} in a fresh kernel.`
            : `Runs the current (unsaved) content of ${path} in a fresh kernel.`,
          name,
          kernel: notebookKernel(nb)
        });
      }
    });

    commands.addCommand(CommandIDs.runCells, {
      label: 'Run Selected Cells as Task',
      caption: 'Run the selected code cells, in order, as one background task',
      icon: tasksIcon,
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
            'Run Selected Cells as Task',
            'Select at least one code cell.'
          );
          return null;
        }
        const base = PathExt.basename(nb.context.path).replace(/\.ipynb$/i, '');
        return submit(
          { cells },
          {
            title: 'Run Selected Cells as Task',
            description: `Runs ${cells.length} selected cell${cells.length === 1 ? '' : 's'} of ${base} in a fresh kernel.`,
            name: `${base} (${cells.length} cell${cells.length === 1 ? '' : 's'})`,
            kernel: notebookKernel(nb)
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
        args.path ? `Run ${PathExt.basename(String(args.path))} as Task` : 'Run as Task',
      caption: 'Run the selected .py script or .ipynb notebook as a background task',
      icon: tasksIcon,
      isVisible: args => !!args.path || selectedFiles().length > 0,
      execute: async args => {
        const paths = args.path ? [String(args.path)] : selectedFiles();
        if (!paths.length) {
          return null;
        }
        const first = paths[0];
        const options = await askSubmitOptions({
          title: 'Run as Task',
          description:
            paths.length === 1
              ? `Runs ${first} in a fresh kernel.`
              : `Runs ${paths.length} files, each as its own task.`,
          defaultName:
            paths.length === 1 ? PathExt.basename(first) : '',
          defaultKernel: '',
          kernelspecs: serviceManager.kernelspecs.specs
        });
        if (!options) {
          return null;
        }
        const created: ITask[] = [];
        for (const path of paths) {
          try {
            const task = await TaskAPI.submit({
              path,
              ...options,
              name:
                paths.length === 1
                  ? options.name
                  : options.name
                    ? `${options.name} ${PathExt.basename(path)}`
                    : PathExt.basename(path)
            });
            model.track(task);
            created.push(task);
          } catch (error) {
            reportError(`Could not submit ${path}`, error);
          }
        }
        if (created.length) {
          const task = created[0];
          Notification.info(
            created.length === 1
              ? `Task “${task.name}” submitted`
              : `${created.length} tasks submitted`,
            {
              autoClose: 4000,
              actions: [{ label: 'Open', callback: () => openTask(task.id) }]
            }
          );
        }
        return created.length === 1 ? created[0] : created;
      }
    });

    commands.addCommand(CommandIDs.openPanel, {
      label: 'Show Tasks Panel',
      caption: 'Show the list of background tasks',
      icon: tasksIcon,
      execute: () => shell.activateById(panel.id)
    });

    commands.addCommand(CommandIDs.openTask, {
      label: args => (args.id ? `Open Task ${String(args.id).slice(0, 8)}` : 'Open Task'),
      caption: 'Open the detail view of a task',
      execute: args => {
        const id = String(args.id ?? '');
        if (id) {
          openTask(id);
        }
      }
    });

    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Tasks',
      caption: 'Reload the task list from the server',
      execute: () => model.refresh()
    });

    // ------------------------------------------- selection and row context menu
    const selected = (): ITask[] =>
      panel.selection.map(id => model.get(id)).filter((t): t is ITask => !!t);
    const count = (tasks: ITask[]): string =>
      tasks.length > 1 ? trans.__(' (%1 tasks)', tasks.length) : '';
    commands.addCommand(CommandIDs.openSelected, {
      label: () => trans.__('Open') + count(selected()),
      execute: () => selected().forEach(t => openTask(t.id))
    });
    commands.addCommand(CommandIDs.cancelSelected, {
      label: () => trans.__('Cancel') + count(selected().filter(t => !isTerminal(t.status))),
      isEnabled: () => selected().some(t => !isTerminal(t.status)),
      execute: async () => {
        for (const t of selected().filter(t => !isTerminal(t.status))) {
          try {
            model.upsert(await TaskAPI.cancel(t.id));
          } catch (error) {
            reportError(trans.__('Cancel failed'), error);
          }
        }
      }
    });
    commands.addCommand(CommandIDs.rerunSelected, {
      label: () => trans.__('Rerun') + count(selected()),
      isEnabled: () => selected().length > 0,
      execute: async () => {
        for (const t of selected()) {
          try {
            model.track(await TaskAPI.rerun(t.id));
          } catch (error) {
            reportError(trans.__('Rerun failed'), error);
          }
        }
      }
    });
    commands.addCommand(CommandIDs.deleteSelected, {
      label: () => trans.__('Delete') + count(selected().filter(t => isTerminal(t.status))),
      isEnabled: () => selected().some(t => isTerminal(t.status)),
      execute: async () => {
        const tasks = selected().filter(t => isTerminal(t.status));
        const result = await showDialog({
          title: trans.__('Delete tasks'),
          body: trans._n(
            'Delete %1 finished task with its logs, outputs and artifacts?',
            'Delete %1 finished tasks with their logs, outputs and artifacts?',
            tasks.length
          ),
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: trans.__('Delete') })]
        });
        if (!result.button.accept) {
          return;
        }
        for (const t of tasks) {
          try {
            await TaskAPI.remove(t.id);
            model.removeTask(t.id);
          } catch (error) {
            reportError(trans.__('Delete failed'), error);
          }
        }
      }
    });
    [
      CommandIDs.openSelected,
      CommandIDs.cancelSelected,
      CommandIDs.rerunSelected,
      CommandIDs.deleteSelected
    ].forEach((command, rank) =>
      app.contextMenu.addItem({ command, selector: '.jp-TaskRun-row', rank })
    );

    app.contextMenu.addItem({
      command: CommandIDs.runFile,
      selector: '.jp-DirListing-item[data-file-type="notebook"]',
      rank: 4
    });
    app.contextMenu.addItem({
      command: CommandIDs.runFile,
      selector: '.jp-DirListing-item[data-file-type="python"]',
      rank: 4
    });
    app.contextMenu.addItem({
      command: CommandIDs.runCells,
      selector: '.jp-Notebook .jp-Cell',
      rank: 20
    });

    if (palette) {
      for (const command of [
        CommandIDs.runNotebook,
        CommandIDs.runCells,
        CommandIDs.runFile,
        CommandIDs.openPanel,
        CommandIDs.refresh
      ]) {
        palette.addItem({ command, category: PALETTE_CATEGORY });
      }
    }

    if (notebooks) {
      notebooks.currentChanged.connect(() => {
        commands.notifyCommandChanged(CommandIDs.runNotebook);
        commands.notifyCommandChanged(CommandIDs.runCells);
      });
    }

    // ----------------------------------------------------------- status bar
    if (statusBar) {
      const item = new TaskStatusItem(model, () => shell.activateById(panel.id));
      statusBar.registerStatusItem('jupyter-taskrun:status', {
        item,
        align: 'left',
        rank: 4
      });
    }
  }
};

export default plugin;

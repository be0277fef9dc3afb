/**
 * jupyter-taskrun: the JupyterLab side of jupyter_taskrun.
 *
 * A "Tasks" panel in the left sidebar (with a "Schedules" view), a detail
 * view per task in the main area, "Run as Task" and "Schedule…" commands
 * (notebook, selected cells, files), a status-bar item and notifications for
 * tasks started from this Lab.
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
  showDialog,
  showErrorMessage,
  WidgetTracker
} from '@jupyterlab/apputils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { IRunningSessionManagers } from '@jupyterlab/running';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStateDB } from '@jupyterlab/statedb';
import { IStatusBar } from '@jupyterlab/statusbar';
import { ITranslator } from '@jupyterlab/translation';
import { clearIcon } from '@jupyterlab/ui-components';

import { setServerSettings, TaskAPI } from './api';
import { CommandIDs } from './commandids';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- settings, notifications and the Running section apply from start-up
import { addLabIntegration, initState } from './citizen';
import { addCompareCommand } from './comparecommand';
import type { TaskDetail } from './detail';
import { setTranslator, trans } from './i18n';
import { tasksIcon } from './icons';
import { isTerminal, ITask } from './models';
import { settings } from './settings';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- the sidebar is shown (and restored) at start
import { TaskPanel } from './panel';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- the commands are registered at start (their dialog loads lazily)
import { addRunCommands } from './run';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- the commands are registered at start (their dialog loads lazily)
import { addScheduleCommands } from './schedulecommands';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- the schedules follow the change feed from start-up
import { ScheduleListModel } from './schedulemodel';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- the Schedules view is part of the sidebar
import { ScheduleView } from './schedules';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- the sidebar is shown (and restored) at start
import { TaskSidebar } from './sidebar';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- the status item shows at start
import { TaskStatusItem } from './statusbar';
// eslint-disable-next-line jupyter/prefer-lazy-imports -- the list model follows the change feed from start-up
import { TaskListModel } from './tasklist';

export * from './models';
export { requestAPI, TaskAPI } from './api';
export { CommandIDs } from './commandids';

const PALETTE_CATEGORY = 'Tasks';

/** A command without arguments, for `describedBy`. */
const NO_ARGS = { args: { type: 'object' as const, properties: {} } };

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-taskrun:plugin',
  description:
    'Tasks panel (with Schedules), task detail views, "Run as Task" and "Schedule…" commands for jupyter_taskrun.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [
    ICommandPalette,
    ILayoutRestorer,
    IStatusBar,
    INotebookTracker,
    IFileBrowserFactory,
    IDocumentManager,
    ITranslator,
    ISettingRegistry,
    IStateDB,
    IRunningSessionManagers,
    ILauncher
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
    translator: ITranslator | null,
    settingRegistry: ISettingRegistry | null,
    state: IStateDB | null,
    running: IRunningSessionManagers | null,
    launcher: ILauncher | null
  ) => {
    setTranslator(translator);
    initState(state);
    const { commands, shell, serviceManager } = app;
    setServerSettings(serviceManager.serverSettings);

    const model = new TaskListModel();
    const scheduleModel = new ScheduleListModel(model);
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

    // an executed notebook is a record to read: opened without a kernel
    // (the user can still pick one from the notebook's kernel menu)
    const openPath = async (path: string): Promise<void> => {
      const noKernel = {
        shouldStart: false,
        canStart: false,
        autoStartDefault: false
      };
      if (docManager) {
        const opened = !!docManager.findWidget(path);
        const widget = docManager.openOrReveal(
          path,
          'default',
          undefined,
          {},
          noKernel
        );
        if (widget && !opened) {
          // what Lab changes while loading the saved record (normalising
          // it) is not the user's: closing it unchanged does not ask to save
          await widget.context.ready;
          await widget.context.sessionContext.ready;
          await new Promise(resolve => window.setTimeout(resolve, 0));
          widget.context.model.dirty = false;
        }
      } else {
        // (without the document manager Lab's own kernel preference applies)
        await commands.execute('docmanager:open', { path });
      }
    };

    // one tab per task: a second open (double click, notification, command,
    // restored layout) reveals the tab already there
    const openTabs = new Map<string, MainAreaWidget<TaskDetail>>();
    const revealTab = (id: string): boolean => {
      const existing =
        openTabs.get(id) ?? tracker.find(w => w.content.taskId === id);
      if (!existing || existing.isDisposed) {
        return false;
      }
      if (!existing.isAttached) {
        shell.add(existing, 'main');
      }
      shell.activateById(existing.id);
      return true;
    };
    const showTask = async (id: string): Promise<void> => {
      if (revealTab(id)) {
        return;
      }
      // the detail view loads on first use, not with the application
      const { createDetailWidget } = await import('./detail');
      if (revealTab(id)) {
        return; // opened a second time while the module loaded
      }
      const widget = createDetailWidget({
        taskId: id,
        model,
        rendermime,
        openPath,
        openTask,
        onError: reportError,
        openCompare: scope => openCompare(scope)
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
    const openTask = (id: string): void => {
      showTask(id).catch(error =>
        reportError(trans.__('Could not open the task'), error)
      );
    };

    // ------------------------------------------------------------- sidebar
    const panel = new TaskPanel({
      model,
      openTask,
      onError: reportError,
      clearFinished: () => void commands.execute(CommandIDs.clearFinished),
      showTitle: false // the sidebar's "Tasks | Schedules" switch names it
    });
    const showSchedules = () => {
      sidebar.showView('schedules');
      shell.activateById(sidebar.id);
    };
    const { editSchedule } = addScheduleCommands(app, {
      scheduleModel,
      notebooks,
      browsers,
      showSchedules,
      reportError
    });
    const schedules = new ScheduleView({
      model: scheduleModel,
      openTask,
      edit: editSchedule,
      onError: reportError
    });
    const sidebar = new TaskSidebar({ tasks: panel, schedules, scheduleModel });
    shell.add(sidebar, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(sidebar, 'jupyter-taskrun-panel');
      void restorer.restore(tracker, {
        command: CommandIDs.openTask,
        args: w => ({ id: w.content.taskId }),
        name: w => w.content.taskId
      });
    }
    model.start();
    scheduleModel.start();

    // ------------------------- settings, notifications, Running panel, launcher
    addLabIntegration({
      pluginId: plugin.id,
      model,
      openTask,
      reportError,
      settingRegistry,
      state,
      running,
      launcher
    });

    // ------------------------------------------------------ Run as Task
    addRunCommands(app, { model, notebooks, browsers, openTask, reportError });

    commands.addCommand(CommandIDs.openPanel, {
      label: args =>
        args.isLauncher ? trans.__('Tasks') : trans.__('Show Tasks Panel'),
      caption: trans.__('Show the list of background tasks'),
      icon: tasksIcon,
      describedBy: NO_ARGS,
      execute: () => {
        sidebar.showView('tasks');
        shell.activateById(sidebar.id);
      }
    });

    commands.addCommand(CommandIDs.openTask, {
      label: args =>
        args.id
          ? trans.__('Open Task %1', String(args.id).slice(0, 8))
          : trans.__('Open Task'),
      caption: trans.__('Open the detail view of a task'),
      describedBy: {
        args: {
          type: 'object',
          properties: {
            id: { type: 'string', description: trans.__('The task id') }
          },
          required: ['id']
        }
      },
      execute: args => {
        const id = String(args.id ?? '');
        // returned, so that the layout restorer waits for the view
        return id ? showTask(id) : undefined;
      }
    });

    commands.addCommand(CommandIDs.refresh, {
      label: trans.__('Refresh Tasks'),
      caption: trans.__('Reload the task list from the server'),
      describedBy: NO_ARGS,
      execute: () => model.refresh()
    });

    // ------------------------------------------- selection and row context menu
    const selected = (): ITask[] =>
      panel.selection.map(id => model.get(id)).filter((t): t is ITask => !!t);
    const { open: openCompare } = addCompareCommand(app, {
      model,
      restorer,
      selected,
      openTask,
      reportError
    });
    const count = (tasks: ITask[]): string =>
      tasks.length > 1 ? trans.__(' (%1 tasks)', tasks.length) : '';
    commands.addCommand(CommandIDs.openSelected, {
      describedBy: NO_ARGS,
      label: () => trans.__('Open') + count(selected()),
      execute: () => selected().forEach(t => openTask(t.id))
    });
    commands.addCommand(CommandIDs.cancelSelected, {
      describedBy: NO_ARGS,
      label: () =>
        trans.__('Cancel') +
        count(selected().filter(t => !isTerminal(t.status))),
      isEnabled: () => selected().some(t => !isTerminal(t.status)),
      execute: async () => {
        const { confirmCancel } = await import('./cascade');
        for (const t of selected().filter(t => !isTerminal(t.status))) {
          try {
            const done = await confirmCancel(t.id, t.name); // asks about waiting dependents
            if (done) {
              model.upsert(done);
            }
          } catch (error) {
            reportError(trans.__('Cancel failed'), error);
          }
        }
      }
    });
    commands.addCommand(CommandIDs.rerunSelected, {
      describedBy: NO_ARGS,
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
      describedBy: NO_ARGS,
      label: () =>
        trans.__('Delete') +
        count(selected().filter(t => isTerminal(t.status))),
      isEnabled: () => selected().some(t => isTerminal(t.status)),
      execute: async () => {
        const tasks = selected().filter(t => isTerminal(t.status));
        const result = !settings.current.confirmDelete
          ? { button: { accept: true } } // the confirmDelete setting
          : await showDialog({
              title: trans.__('Delete tasks'),
              body: trans._n(
                'Delete %1 finished task with its logs, outputs and artifacts?',
                'Delete %1 finished tasks with their logs, outputs and artifacts?',
                tasks.length
              ),
              buttons: [
                Dialog.cancelButton(),
                Dialog.warnButton({ label: trans.__('Delete') })
              ]
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
    // the row, file browser, cell and panel context menus are declared in
    // schema/plugin.json (jupyter.lab.menus)

    // the notebook panel's "saved …" link names this command (data-commandlinker-*), so that
    // both views open an executed notebook the same way: without starting a kernel
    commands.addCommand(CommandIDs.openExecutedNotebook, {
      describedBy: {
        args: {
          type: 'object',
          properties: {
            path: {
              type: 'string',
              description: trans.__('The notebook, relative to the server root')
            }
          },
          required: ['path']
        }
      },
      label: trans.__('Open Executed Notebook (No Kernel)'),
      execute: async args => {
        const path = typeof args.path === 'string' ? args.path : '';
        if (path) {
          await openPath(path);
        }
      }
    });
    commands.addCommand(CommandIDs.clearFinished, {
      describedBy: NO_ARGS,
      label: trans.__('Clear Finished Tasks…'),
      caption: trans.__(
        'Delete your finished tasks older than some days, or all of a status (asks first)'
      ),
      icon: clearIcon,
      execute: async () => {
        // the dialog loads on first use, not with the application
        const { clearFinished } = await import('./clear');
        await clearFinished(model, reportError);
      }
    });
    if (palette) {
      for (const command of [
        CommandIDs.runNotebook,
        CommandIDs.runCells,
        CommandIDs.runFile,
        CommandIDs.scheduleNotebook,
        CommandIDs.showSchedules,
        CommandIDs.openPanel,
        CommandIDs.refresh,
        CommandIDs.clearFinished,
        CommandIDs.compare
      ]) {
        palette.addItem({ command, category: PALETTE_CATEGORY });
      }
    }

    // ----------------------------------------------------------- status bar
    if (statusBar) {
      const item = new TaskStatusItem(model, () => {
        sidebar.showView('tasks');
        shell.activateById(sidebar.id);
      });
      statusBar.registerStatusItem('jupyter-taskrun:status', {
        item,
        align: 'left',
        rank: 4
      });
    }
  }
};

export default plugin;

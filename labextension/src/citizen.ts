/**
 * The extension's place in Lab beyond its own views: its settings (applied
 * live), the UI state database, notifications of task ends, a section of the
 * Running panel and a launcher item. The buttons, menus and shortcuts are
 * declared in schema/plugin.json (`jupyter.lab.toolbars`, `.menus`,
 * `.shortcuts`), so users change them in the Settings Editor.
 */
import type { ILauncher } from '@jupyterlab/launcher';
import type { IRunningSessionManagers } from '@jupyterlab/running';
import type { ISettingRegistry } from '@jupyterlab/settingregistry';
import type { IStateDB } from '@jupyterlab/statedb';

import { CommandIDs } from './commandids';
import { trans } from './i18n';
import { TaskNotifier } from './notify';
import { addRunningTasks } from './running';
import { settings } from './settings';
import type { TaskListModel } from './tasklist';
import { uiState } from './uistate';

export interface ICitizenOptions {
  pluginId: string;
  model: TaskListModel;
  openTask: (id: string) => void;
  reportError: (title: string, error: unknown) => void;
  settingRegistry: ISettingRegistry | null;
  state: IStateDB | null;
  running: IRunningSessionManagers | null;
  launcher: ILauncher | null;
}

/** Before the views are made: the stored UI state starts loading. */
export function initState(state: IStateDB | null): void {
  void uiState.init(state);
}

export function addLabIntegration(options: ICitizenOptions): void {
  const { model, openTask, reportError } = options;
  const applyPolling = () =>
    model.setPolling(
      settings.current.refreshInterval * 1000,
      settings.current.standby
    );
  settings.changed.connect(applyPolling);
  applyPolling();
  if (options.settingRegistry) {
    options.settingRegistry
      .load(options.pluginId)
      .then(s => settings.follow(s))
      .catch(error =>
        console.warn(trans.__('Tasks: settings not loaded: %1', error))
      );
  }

  new TaskNotifier({ model, openTask, reportError });

  if (options.running) {
    addRunningTasks(options.running, { model, openTask, reportError });
  }

  options.launcher?.add({
    command: CommandIDs.openPanel,
    // eslint-disable-next-line jupyter/no-untranslated-string -- Lab's own category: a key, translated by Lab
    category: 'Other',
    args: { isLauncher: true },
    rank: 50
  });
}

/**
 * The Tasks sidebar: a "Tasks | Schedules" switch over the two views (the
 * task list of panel.ts and the schedules of schedules.ts). Only the chosen
 * view is shown; each view tells its model when it is shown or hidden.
 */
import { Panel, Widget } from '@lumino/widgets';

import { trans } from './i18n';
import { tasksIcon } from './icons';
import type { TaskPanel } from './panel';
import type { ScheduleListModel } from './schedulemodel';
import type { ScheduleView } from './schedules';
import { h, setText } from './utils';

export type SidebarView = 'tasks' | 'schedules';

export interface ITaskSidebarOptions {
  tasks: TaskPanel;
  schedules: ScheduleView;
  scheduleModel: ScheduleListModel;
}

export class TaskSidebar extends Panel {
  constructor(options: ITaskSidebarOptions) {
    super();
    this.id = 'jupyter-taskrun-panel';
    this.addClass('jp-TaskRun-sidebar');
    this.title.icon = tasksIcon;
    this.title.caption = trans.__('Tasks');
    this._tasks = options.tasks;
    this._schedules = options.schedules;
    this._scheduleModel = options.scheduleModel;
    this._tasks.id = 'jupyter-taskrun-tasks';

    const bar = new Widget();
    bar.addClass('jp-TaskRun-viewSwitch');
    bar.node.setAttribute('role', 'tablist');
    bar.node.setAttribute('aria-label', trans.__('Tasks sidebar views'));
    const tab = (view: SidebarView, label: string) => {
      const button = h('button', 'jp-TaskRun-viewTab');
      button.dataset.view = view;
      button.setAttribute('role', 'tab');
      button.appendChild(h('span', 'jp-TaskRun-viewLabel', label));
      button.addEventListener('click', () => this.showView(view));
      bar.node.appendChild(button);
      this._tabs.set(view, button);
      return button;
    };
    tab('tasks', trans.__('Tasks'));
    const schedulesTab = tab('schedules', trans.__('Schedules'));
    this._badge = h('span', 'jp-TaskRun-viewBadge');
    schedulesTab.appendChild(this._badge);

    this.addWidget(bar);
    this.addWidget(this._tasks);
    this.addWidget(this._schedules);
    this._scheduleModel.changed.connect(this._updateBadge, this);
    this.showView('tasks');
    this._updateBadge();
  }

  /** The view shown. */
  get view(): SidebarView {
    return this._view;
  }

  /** Show the task list or the schedules. */
  showView(view: SidebarView): void {
    this._view = view;
    for (const [name, button] of this._tabs) {
      const selected = name === view;
      button.classList.toggle('jp-mod-active', selected);
      button.setAttribute('aria-selected', String(selected));
      button.tabIndex = selected ? 0 : -1;
    }
    if (view === 'tasks') {
      this._schedules.hide();
      this._tasks.show();
    } else {
      this._tasks.hide();
      this._schedules.show();
    }
  }

  override dispose(): void {
    if (!this.isDisposed) {
      this._scheduleModel.changed.disconnect(this._updateBadge, this);
    }
    super.dispose();
  }

  private _updateBadge(): void {
    const schedules = this._scheduleModel.schedules;
    const enabled = schedules.filter(s => s.enabled).length;
    setText(this._badge, String(enabled));
    this._badge.hidden = enabled === 0;
    this._badge.title = trans._n(
      '%1 enabled schedule',
      '%1 enabled schedules',
      enabled
    );
  }

  private _tasks: TaskPanel;
  private _schedules: ScheduleView;
  private _scheduleModel: ScheduleListModel;
  private _tabs = new Map<SidebarView, HTMLButtonElement>();
  private _badge: HTMLElement;
  private _view: SidebarView = 'tasks';
}

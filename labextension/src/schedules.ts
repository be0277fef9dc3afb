/**
 * The "Schedules" view of the Tasks sidebar: one card per schedule with its
 * name, its cron in words (the server's description), the next run, the
 * last run's status, an enable switch (pause / resume), run now, edit,
 * delete (asks first) and the history of its runs; a run opens the task's
 * detail view. Everything shown comes from the one ScheduleListModel
 * (schedulemodel.ts), which follows the change feed: the view never asks
 * the server itself, it asks the model. The history list is schedulehistory.ts.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import {
  caretDownIcon,
  caretRightIcon,
  deleteIcon,
  editIcon,
  refreshIcon,
  runIcon
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { trans } from './i18n';
import { ISchedule, ITask, TASK_STATUSES } from './models';
import { formatRunTime, formatUntil } from './scheduleform';
import { historyItems, historyKey } from './schedulehistory';
import { ScheduleListModel } from './schedulemodel';
import { secondTicker } from './ticker';
import {
  formatAge,
  formatTime,
  h,
  iconNode,
  setText,
  STATUS_LABELS,
  statusIcon
} from './utils';

export interface IScheduleViewOptions {
  model: ScheduleListModel;
  /** Open the detail view of a task. */
  openTask: (id: string) => void;
  /** Open the edit dialog of a schedule. */
  edit: (schedule: ISchedule) => void;
  /** Report a failed action to the user. */
  onError: (title: string, error: unknown) => void;
}

interface ICard {
  node: HTMLLIElement;
  status: HTMLElement;
  statusKey: string;
  name: HTMLElement;
  toggle: HTMLInputElement;
  description: HTMLElement;
  next: HTMLElement;
  last: HTMLElement;
  problem: HTMLElement;
  run: HTMLButtonElement;
  historyToggle: HTMLButtonElement;
  historyLabel: HTMLElement;
  historyIcon: HTMLElement;
  history: HTMLElement;
  historyKey: string;
}

export class ScheduleView extends Widget {
  constructor(options: IScheduleViewOptions) {
    super();
    this._model = options.model;
    this._openTask = options.openTask;
    this._edit = options.edit;
    this._onError = options.onError;
    this.id = 'jupyter-taskrun-schedules';
    this.addClass('jp-TaskRun-schedules');
    this._build();
    this._model.changed.connect(this._scheduleRender, this);
    this._render();
  }

  protected override onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._model.setActive(true);
    this._startTicker();
    this._render();
  }

  protected override onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this._model.setActive(false);
    this._stopTicker();
  }

  protected override onBeforeDetach(msg: Message): void {
    this._model.setActive(false);
    this._stopTicker();
    super.onBeforeDetach(msg);
  }

  override dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._ticker.dispose();
    if (this._frame !== null) {
      window.cancelAnimationFrame(this._frame);
    }
    this._model.changed.disconnect(this._scheduleRender, this);
    super.dispose();
  }

  // ------------------------------------------------------------------ layout

  private _build(): void {
    const header = h('div', 'jp-TaskRun-schedHeader');
    this._summary = h('span', 'jp-TaskRun-schedSummary');
    const refresh = h(
      'button',
      'jp-TaskRun-iconButton jp-mod-refreshSchedules'
    );
    refresh.title = trans.__('Reload the schedules');
    refresh.setAttribute('aria-label', trans.__('Reload the schedules'));
    refresh.appendChild(iconNode(refreshIcon));
    refresh.addEventListener('click', () => void this._model.refresh());
    header.append(this._summary, h('span', 'jp-TaskRun-spacer'), refresh);

    this._error = h('div', 'jp-TaskRun-schedError');
    this._error.hidden = true;
    this._list = h('ul', 'jp-TaskRun-schedList');
    this._list.setAttribute('role', 'list');
    this._empty = h('div', 'jp-TaskRun-schedEmpty');
    const body = h('div', 'jp-TaskRun-schedBody');
    body.append(this._error, this._list, this._empty);
    this.node.append(header, body);
  }

  // ------------------------------------------------------------------ render

  private _scheduleRender(): void {
    if (this._frame !== null || this.isDisposed) {
      return;
    }
    this._frame = window.requestAnimationFrame(() => {
      this._frame = null;
      this._render();
    });
  }

  private _render(): void {
    if (this.isDisposed) {
      return;
    }
    const model = this._model;
    const schedules = model.schedules;
    const paused = schedules.filter(s => !s.enabled).length;
    setText(
      this._summary,
      paused
        ? trans._n(
            '%1 schedule, %2 paused',
            '%1 schedules, %2 paused',
            schedules.length,
            paused
          )
        : trans._n('%1 schedule', '%1 schedules', schedules.length)
    );
    const error = model.lastError
      ? trans.__('Could not load the schedules: %1', model.lastError)
      : '';
    setText(this._error, error);
    this._error.hidden = !error;

    const now = Date.now();
    const seen = new Set<string>();
    let previous: HTMLElement | null = null;
    for (const schedule of schedules) {
      seen.add(schedule.id);
      let card = this._cards.get(schedule.id);
      if (!card) {
        card = this._createCard(schedule.id);
        this._cards.set(schedule.id, card);
      }
      this._updateCard(card, schedule, now);
      const expected: ChildNode | null = previous
        ? previous.nextSibling
        : this._list.firstChild;
      if (expected !== card.node) {
        this._list.insertBefore(card.node, expected);
      }
      previous = card.node;
    }
    for (const [id, card] of this._cards) {
      if (!seen.has(id)) {
        card.node.remove();
        this._cards.delete(id);
        this._expanded.delete(id);
      }
    }
    this._empty.hidden = schedules.length > 0 || !model.loaded;
    setText(
      this._empty,
      trans.__(
        'No schedules yet. Use “Schedule…” on a notebook or a .py file in the file browser, or the clock button of a notebook’s toolbar.'
      )
    );
  }

  private _createCard(id: string): ICard {
    const node = h('li', 'jp-TaskRun-schedule');
    node.dataset.scheduleId = id;
    node.setAttribute('role', 'listitem');

    const top = h('div', 'jp-TaskRun-schedTop');
    const status = h('span', 'jp-TaskRun-schedStatus');
    const name = h('span', 'jp-TaskRun-schedName');
    const switchBox = h('label', 'jp-TaskRun-schedToggle');
    const toggle = h('input');
    toggle.type = 'checkbox';
    toggle.setAttribute('role', 'switch');
    toggle.addEventListener('change', () => this._setEnabled(id, toggle));
    switchBox.append(toggle, h('span', 'jp-TaskRun-schedSlider'));
    top.append(status, name, switchBox);

    const description = h('div', 'jp-TaskRun-schedDescription');
    const meta = h('div', 'jp-TaskRun-schedMeta');
    const next = h('span', 'jp-TaskRun-schedNext');
    const last = h('span', 'jp-TaskRun-schedLast');
    meta.append(next, last);
    const problem = h('div', 'jp-TaskRun-schedProblem');
    problem.hidden = true;

    const actions = h('div', 'jp-TaskRun-schedActions');
    const button = (cls: string, label: string, icon: typeof runIcon) => {
      const b = h('button', `jp-TaskRun-iconButton ${cls}`);
      b.title = label;
      b.setAttribute('aria-label', label);
      b.appendChild(iconNode(icon));
      return b;
    };
    const run = button('jp-mod-runNow', trans.__('Run now'), runIcon);
    run.addEventListener('click', () => this._runNow(id, run));
    const edit = button('jp-mod-edit', trans.__('Edit…'), editIcon);
    edit.addEventListener('click', () => {
      const schedule = this._model.get(id);
      if (schedule) {
        this._edit(schedule);
      }
    });
    const remove = button('jp-mod-delete', trans.__('Delete…'), deleteIcon);
    remove.addEventListener('click', () => void this._delete(id));
    const historyToggle = h('button', 'jp-TaskRun-schedHistoryToggle');
    historyToggle.setAttribute('aria-expanded', 'false');
    const historyIcon = h('span', 'jp-TaskRun-schedCaret');
    const historyLabel = h('span');
    historyToggle.append(historyIcon, historyLabel);
    historyToggle.addEventListener('click', () => this._toggleHistory(id));
    actions.append(
      historyToggle,
      h('span', 'jp-TaskRun-spacer'),
      run,
      edit,
      remove
    );

    const history = h('ul', 'jp-TaskRun-schedHistory');
    history.hidden = true;
    node.append(top, description, meta, problem, actions, history);
    return {
      node,
      status,
      statusKey: '',
      name,
      toggle,
      description,
      next,
      last,
      problem,
      run,
      historyToggle,
      historyLabel,
      historyIcon,
      history,
      historyKey: ''
    };
  }

  private _updateCard(card: ICard, s: ISchedule, now: number): void {
    const node = card.node;
    const lastStatus = s.last_run?.status ?? '';
    node.dataset.enabled = String(s.enabled);
    node.dataset.lastStatus = lastStatus;
    node.classList.toggle('jp-mod-paused', !s.enabled);
    for (const status of TASK_STATUSES) {
      node.classList.toggle(`jp-mod-${status}`, status === lastStatus);
    }
    if (card.statusKey !== lastStatus) {
      card.statusKey = lastStatus;
      card.status.replaceChildren(
        lastStatus
          ? iconNode(statusIcon(lastStatus), '', STATUS_LABELS[lastStatus])
          : iconNode(statusIcon('queued'), '', trans.__('Never run'))
      );
    }
    setText(card.name, s.name || s.id);
    card.name.title = `${s.name} (${s.id})`;
    if (!this._toggling.has(s.id)) {
      card.toggle.checked = s.enabled;
    }
    card.toggle.disabled = this._toggling.has(s.id);
    const toggleTitle = s.enabled
      ? trans.__('Enabled: click to pause')
      : trans.__('Paused: click to resume');
    card.toggle.title = toggleTitle;
    card.toggle.setAttribute('aria-label', toggleTitle);

    setText(card.description, s.description || s.cron);
    card.description.title = trans.__('cron: %1 (%2)', s.cron, s.timezone);

    const nextRun = s.next_runs[0];
    const ended =
      s.enabled &&
      !nextRun &&
      ((s.max_runs !== null && s.run_count >= s.max_runs) ||
        (s.end_at !== null && (Date.parse(s.end_at) || 0) <= now));
    const nextText = !s.enabled
      ? trans.__('Paused')
      : nextRun
        ? trans.__(
            'Next: %1 · %2',
            formatRunTime(nextRun, s.timezone),
            formatUntil(nextRun, now)
          )
        : ended
          ? trans.__('Ended')
          : trans.__('No next run');
    setText(card.next, nextText);
    card.next.dataset.state = !s.enabled
      ? 'paused'
      : nextRun
        ? 'scheduled'
        : 'none';
    card.next.title = s.next_runs.length
      ? [trans.__('Next runs:'), ...s.next_runs.map(r => formatTime(r))].join(
          '\n'
        )
      : '';

    const last = s.last_run;
    setText(
      card.last,
      last
        ? trans.__(
            'Last: %1 %2',
            STATUS_LABELS[last.status] ?? last.status,
            formatAge(last.scheduled_for ?? last.created_at, now)
          )
        : trans.__('Never run')
    );
    const counts = Object.entries(s.counts ?? {})
      .filter(([, n]) => n > 0)
      .map(
        ([status, n]) =>
          `${STATUS_LABELS[status as ITask['status']] ?? status}: ${n}`
      );
    card.last.title = [
      trans._n('%1 run', '%1 runs', s.run_count),
      ...counts,
      s.skipped ? trans._n('%1 skipped', '%1 skipped', s.skipped) : '',
      s.pending_for
        ? trans.__(
            'Held until the running one ends: %1',
            formatTime(s.pending_for)
          )
        : ''
    ]
      .filter(Boolean)
      .join('\n');
    const problem = s.last_error
      ? trans.__('Last firing made no task: %1', s.last_error)
      : '';
    setText(card.problem, problem);
    card.problem.hidden = !problem;

    card.run.disabled = this._running.has(s.id);
    const expanded = this._expanded.has(s.id);
    card.historyToggle.setAttribute('aria-expanded', String(expanded));
    setText(
      card.historyLabel,
      trans._n('History (%1 run)', 'History (%1 runs)', s.run_count)
    );
    const caret = expanded ? 'down' : 'right';
    if (card.historyIcon.dataset.caret !== caret) {
      card.historyIcon.dataset.caret = caret;
      card.historyIcon.replaceChildren(
        iconNode(expanded ? caretDownIcon : caretRightIcon)
      );
    }
    card.history.hidden = !expanded;
    if (expanded) {
      const history = this._model.history(s.id);
      const key = historyKey(history, now);
      if (key !== card.historyKey) {
        card.historyKey = key;
        card.history.replaceChildren(
          ...historyItems(s, history, now, this._openTask)
        );
      }
    }
  }

  // ----------------------------------------------------------------- actions

  private _toggleHistory(id: string): void {
    if (this._expanded.has(id)) {
      this._expanded.delete(id);
    } else {
      this._expanded.add(id);
      const history = this._model.history(id);
      if (!history || (!history.loaded && !history.loading)) {
        void this._model.loadHistory(id);
      }
    }
    this._scheduleRender();
  }

  private _setEnabled(id: string, toggle: HTMLInputElement): void {
    const enabled = toggle.checked;
    this._toggling.add(id);
    this._scheduleRender();
    this._model
      .setEnabled(id, enabled)
      .catch(error => {
        this._onError(
          enabled
            ? trans.__('Could not resume the schedule')
            : trans.__('Could not pause the schedule'),
          error
        );
      })
      .finally(() => {
        this._toggling.delete(id);
        this._scheduleRender();
      });
  }

  private _runNow(id: string, button: HTMLButtonElement): void {
    this._running.add(id);
    button.disabled = true;
    this._model
      .runNow(id)
      .then(task => {
        Notification.info(trans.__('Task “%1” submitted', task.name), {
          autoClose: 4000,
          actions: [
            {
              label: trans.__('Open'),
              callback: () => this._openTask(task.id)
            }
          ]
        });
        if (!this._expanded.has(id)) {
          this._toggleHistory(id);
        }
      })
      .catch(error => this._onError(trans.__('Could not run it now'), error))
      .finally(() => {
        this._running.delete(id);
        this._scheduleRender();
      });
  }

  private async _delete(id: string): Promise<void> {
    const schedule = this._model.get(id);
    if (!schedule) {
      return;
    }
    const result = await showDialog({
      title: trans.__('Delete schedule'),
      body: trans.__(
        'Delete the schedule “%1”? It stops firing; the tasks it already ran are kept.',
        schedule.name
      ),
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: trans.__('Delete') })
      ]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      await this._model.remove(id);
    } catch (error) {
      this._onError(trans.__('Could not delete the schedule'), error);
    }
  }

  // ------------------------------------------------------------------ ticker

  private _startTicker(): void {
    void this._ticker.start();
  }

  private _stopTicker(): void {
    void this._ticker.stop();
  }

  private _model: ScheduleListModel;
  private _openTask: (id: string) => void;
  private _edit: (schedule: ISchedule) => void;
  private _onError: (title: string, error: unknown) => void;
  private _cards = new Map<string, ICard>();
  private _expanded = new Set<string>();
  private _toggling = new Set<string>();
  private _running = new Set<string>();
  private _frame: number | null = null;
  private _ticker = secondTicker('schedules', () => this._render());
  private _summary!: HTMLElement;
  private _error!: HTMLElement;
  private _list!: HTMLUListElement;
  private _empty!: HTMLElement;
}

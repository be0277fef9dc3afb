/**
 * "Clear finished…": asks which finished tasks to delete (a finished status,
 * and older than N days or any age), then deletes them with one request,
 * `DELETE /taskrun/api/tasks?status=…&before=…`, which the server scopes to
 * the caller's own tasks.
 *
 * Guarantees: nothing is deleted before the user confirms; a refusal shows
 * the server's message; deleted tasks leave the list at once and through the
 * change feed (`deleted` entries), so other Lab windows follow too.
 */
import {
  Dialog,
  Notification,
  showDialog,
  showErrorMessage
} from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { TaskAPI } from './api';
import { trans } from './i18n';
import { isTerminal, TaskStatus, TERMINAL_STATUSES } from './models';
import type { TaskListModel } from './tasklist';
import { h, STATUS_LABELS } from './utils';

const ALL_FINISHED = [...TERMINAL_STATUSES].join(',');
const DAY_MS = 86400 * 1000;
const DEFAULT_DAYS = '7';

/** What the dialog asks: which statuses, and how old. */
interface IClearChoice {
  /** comma-separated finished statuses */
  status: string;
  scope: 'older' | 'all';
  days: string;
}

class ClearBody extends Widget implements Dialog.IBodyWidget<IClearChoice> {
  constructor(initial: IClearChoice, narrowedBy: string) {
    super();
    this.addClass('jp-TaskRun-clearDialog');
    const form = h('div', 'jp-TaskRun-form');

    this._status = h('select', 'jp-mod-styled');
    this._status.name = 'status';
    const option = (value: string, label: string) => {
      const o = h('option', '', label);
      o.value = value;
      this._status.appendChild(o);
    };
    option(ALL_FINISHED, trans.__('All finished'));
    for (const status of TERMINAL_STATUSES) {
      option(status, STATUS_LABELS[status]);
    }
    this._status.value = initial.status;
    const statusLabel = h('label', 'jp-TaskRun-formLabel', trans.__('Status'));
    statusLabel.htmlFor = this._status.id = 'jp-TaskRun-clear-status';
    const statusBox = h('div', 'jp-TaskRun-formField');
    statusBox.appendChild(this._status);

    const scopeBox = h('div', 'jp-TaskRun-formField jp-TaskRun-clearScope');
    const radio = (value: IClearChoice['scope']) => {
      const input = h('input');
      input.type = 'radio';
      input.name = 'scope';
      input.value = value;
      input.checked = initial.scope === value;
      return input;
    };
    this._older = radio('older');
    this._all = radio('all');
    this._days = h('input', 'jp-mod-styled jp-TaskRun-clearDays');
    this._days.name = 'days';
    this._days.type = 'number';
    this._days.min = '0';
    this._days.step = 'any';
    this._days.value = initial.days;
    this._days.setAttribute('aria-label', trans.__('Days'));
    this._days.addEventListener('focus', () => (this._older.checked = true));
    const older = h('label', 'jp-TaskRun-clearOption');
    older.append(
      this._older,
      document.createTextNode(trans.__('Older than') + ' '),
      this._days,
      document.createTextNode(' ' + trans.__('days'))
    );
    const all = h('label', 'jp-TaskRun-clearOption');
    all.append(
      this._all,
      document.createTextNode(trans.__('All of them, of any age'))
    );
    scopeBox.append(older, all);

    form.append(
      statusLabel,
      statusBox,
      h('span', 'jp-TaskRun-formLabel', trans.__('Which')),
      scopeBox
    );
    this.node.appendChild(form);
    const notes = [
      trans.__(
        'Only your own tasks are deleted, with their logs, outputs and artifacts. Running and queued tasks are kept.'
      )
    ];
    if (narrowedBy) {
      notes.push(
        trans.__(
          'The %1 filter of the list does not narrow this: every finished task of yours with this status is included.',
          narrowedBy
        )
      );
    }
    for (const note of notes) {
      this.node.appendChild(h('p', 'jp-TaskRun-formHint', note));
    }
  }

  getValue(): IClearChoice {
    return {
      status: this._status.value,
      scope: this._all.checked ? 'all' : 'older',
      days: this._days.value
    };
  }

  private _status: HTMLSelectElement;
  private _older: HTMLInputElement;
  private _all: HTMLInputElement;
  private _days: HTMLInputElement;
}

/** The request the choice stands for, or why it is not valid. */
function toRequest(
  choice: IClearChoice,
  now = Date.now()
): { statuses: TaskStatus[]; before?: string } | { error: string } {
  const statuses = choice.status
    .split(',')
    .filter((s): s is TaskStatus => isTerminal(s as TaskStatus));
  if (!statuses.length) {
    return { error: trans.__('Choose a finished status.') };
  }
  if (choice.scope === 'all') {
    return { statuses };
  }
  const days = Number(choice.days.trim());
  if (choice.days.trim() === '' || !Number.isFinite(days) || days < 0) {
    return { error: trans.__('Days must be a number, 0 or more.') };
  }
  return { statuses, before: new Date(now - days * DAY_MS).toISOString() };
}

/**
 * Ask, then delete. Resolves once done (or cancelled); a failed request is
 * reported through `onError` with the server's message.
 */
export async function clearFinished(
  model: TaskListModel,
  onError: (title: string, error: unknown) => void
): Promise<void> {
  const filters = model.filters;
  let choice: IClearChoice = {
    status:
      filters.status && isTerminal(filters.status)
        ? filters.status
        : ALL_FINISHED,
    scope: 'older',
    days: DEFAULT_DAYS
  };
  const narrowedBy = [
    filters.tag.trim() ? trans.__('tag') : '',
    filters.search.trim() ? trans.__('search') : ''
  ]
    .filter(Boolean)
    .join(trans.__(' and '));
  for (;;) {
    const result = await showDialog<IClearChoice>({
      title: trans.__('Clear finished tasks'),
      body: new ClearBody(choice, narrowedBy),
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: trans.__('Delete') })
      ],
      focusNodeSelector: 'select[name="status"]'
    });
    if (!result.button.accept || !result.value) {
      return;
    }
    choice = result.value;
    const request = toRequest(choice);
    if ('error' in request) {
      await showErrorMessage(trans.__('Clear finished tasks'), request.error);
      continue;
    }
    try {
      const answer = await TaskAPI.clearFinished(
        request.statuses,
        request.before
      );
      // the feed's `deleted` entries do the same; this is for a slow feed
      for (const id of answer?.ids ?? []) {
        model.removeTask(id);
      }
      const n = answer?.deleted ?? 0;
      if (n > 0) {
        Notification.success(
          trans._n('Deleted %1 finished task', 'Deleted %1 finished tasks', n),
          { autoClose: 5000 }
        );
      } else {
        Notification.info(trans.__('No finished task matched: none deleted'), {
          autoClose: 5000
        });
      }
    } catch (error) {
      onError(trans.__('Could not clear finished tasks'), error);
    }
    return;
  }
}

/**
 * The sidebar list's sort chooser and created-date range (panel.ts), and the
 * order of the loaded rows under a field sort.
 *
 * Sorting and the date range are the server's (`?sort=created|name|status|
 * duration|finished` with a leading '-' for descending, `?created_after=` /
 * `?created_before=`), through the list model's filters, so the right pages
 * load; the loaded rows are ordered here by the same rule as store.py (tasks
 * without the field last, ties newest first), so live updates keep their
 * place. The sort and the range are remembered in Lab's state database.
 */
import { trans } from './i18n';
import type { ITask } from './models';
import type { TaskListModel } from './tasklist';
import { uiState } from './uistate';
import { h, parseTime } from './utils';

const STATE_KEY = 'list-view';

/** The field sorts of the chooser (value sorts come from valuecolumns.ts). */
export const FIELD_SORTS = [
  '',
  'created',
  'name',
  '-name',
  'status',
  '-duration',
  'duration',
  '-finished'
] as const;

function sortLabel(sort: string): string {
  switch (sort) {
    case 'created':
      return trans.__('Oldest first');
    case 'name':
      return trans.__('Name (A–Z)');
    case '-name':
      return trans.__('Name (Z–A)');
    case 'status':
      return trans.__('Status');
    case '-duration':
      return trans.__('Longest first');
    case 'duration':
      return trans.__('Shortest first');
    case '-finished':
      return trans.__('Recently ended');
    default:
      return trans.__('Newest first');
  }
}

type Key = string | number | null;

function fieldKey(task: ITask, field: string): Key {
  switch (field) {
    case 'created':
      return parseTime(task.created_at);
    case 'name':
      return task.name ?? '';
    case 'status':
      return task.status;
    case 'finished':
      return parseTime(task.finished_at);
    case 'duration': {
      const start = parseTime(task.started_at);
      const end = parseTime(task.finished_at);
      return start === null || end === null ? null : end - start;
    }
    default:
      return null;
  }
}

/** Is `sort` one this module orders by (a task field, not a recorded value)? */
export function isFieldSort(sort: string): boolean {
  return sort !== '' && (FIELD_SORTS as readonly string[]).includes(sort);
}

/** The loaded tasks in the server's order for a field sort. */
export function orderByField(
  tasks: readonly ITask[],
  sort: string
): readonly ITask[] {
  if (!isFieldSort(sort)) {
    return tasks;
  }
  const descending = sort.startsWith('-');
  const field = sort.replace(/^-/, '');
  const created = (t: ITask) => parseTime(t.created_at) ?? 0;
  return [...tasks].sort((a, b) => {
    const ka = fieldKey(a, field);
    const kb = fieldKey(b, field);
    if (ka === null || kb === null) {
      if (ka !== kb) {
        return ka === null ? 1 : -1; // without the field: last
      }
    } else if (ka !== kb) {
      const less = ka < kb ? -1 : 1;
      return descending ? -less : less;
    }
    return created(b) - created(a); // ties: newest first
  });
}

/** A local date (`YYYY-MM-DD`) as the ISO time of its start; '' stays ''. */
export function dayStart(date: string, plusDays = 0): string {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
  if (!m) {
    return '';
  }
  const day = new Date(+m[1], +m[2] - 1, +m[3] + plusDays);
  return day.toISOString();
}

export class ListControls {
  constructor(model: TaskListModel) {
    this._model = model;
    this.node = h('div', 'jp-TaskRun-listControls');
    this._sort = h('select', 'jp-TaskRun-sort');
    this._sort.setAttribute('aria-label', trans.__('Sort tasks'));
    this._sort.title = trans.__('Sort tasks');
    for (const sort of FIELD_SORTS) {
      const option = h('option', '', sortLabel(sort));
      option.value = sort;
      this._sort.appendChild(option);
    }
    this._sort.addEventListener('change', () => {
      this._model.setFilters({ sort: this._sort.value });
      this._save();
    });
    this._from = this._dateInput(trans.__('Created from'), 'from');
    this._to = this._dateInput(trans.__('Created until (inclusive)'), 'to');
    const range = h('div', 'jp-TaskRun-dateRange');
    range.append(this._from, h('span', '', '–'), this._to);
    this.node.append(this._sort, range);
    model.changed.connect(this.update, this);
    // the remembered view applies once the state database has loaded
    void uiState.ready.then(() => this._restore());
  }

  readonly node: HTMLElement;

  /** Show the model's current sort (a value sort shows as "Newest first"). */
  update(): void {
    const sort = this._model.filters.sort;
    this._sort.value = isFieldSort(sort) ? sort : '';
    this._save();
  }

  dispose(): void {
    this._model.changed.disconnect(this.update, this);
  }

  private _dateInput(label: string, which: 'from' | 'to'): HTMLInputElement {
    const input = h('input', `jp-TaskRun-date jp-mod-${which}`);
    input.type = 'date';
    input.title = label;
    input.setAttribute('aria-label', label);
    input.addEventListener('change', () => this._applyRange());
    return input;
  }

  private _applyRange(): void {
    this._model.setFilters({
      createdAfter: dayStart(this._from.value),
      createdBefore: dayStart(this._to.value, 1)
    });
    this._save();
  }

  private _restore(): void {
    const stored = uiState.get(STATE_KEY) as
      { sort?: unknown; from?: unknown; to?: unknown } | undefined;
    if (!stored || typeof stored !== 'object') {
      this._restored = true;
      return;
    }
    const str = (v: unknown) => (typeof v === 'string' ? v : '');
    this._from.value = str(stored.from);
    this._to.value = str(stored.to);
    const sort = str(stored.sort);
    this._restored = true;
    this._model.setFilters({
      sort: /^-?values\./.test(sort) || isFieldSort(sort) ? sort : '',
      createdAfter: dayStart(this._from.value),
      createdBefore: dayStart(this._to.value, 1)
    });
  }

  private _save(): void {
    if (!this._restored) {
      return; // not before the stored view was read
    }
    const view = {
      sort: this._model.filters.sort,
      from: this._from.value,
      to: this._to.value
    };
    if (JSON.stringify(view) !== JSON.stringify(uiState.get(STATE_KEY))) {
      uiState.set(STATE_KEY, view);
    }
  }

  private _model: TaskListModel;
  private _sort: HTMLSelectElement;
  private _from: HTMLInputElement;
  private _to: HTMLInputElement;
  private _restored = false;
}

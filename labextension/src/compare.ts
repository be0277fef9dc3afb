/**
 * The Compare view (main area): the tasks sharing a tag, or the runs of one
 * schedule, side by side: name, status, duration, one column per parameter
 * and one per recorded value. A click on a column header sorts by it (again:
 * reversed); values and parameters order as the server's
 * `?sort=values.NAME` does (valueutil.ts), tasks without one last.
 *
 * The rows come from `GET /tasks?tag=` / `?schedule=` (paged, at most
 * MAX_TASKS) and then follow the list model (tasklist.ts): a task of the
 * scope that changes, appears or is deleted updates its row.
 *
 * Parameters: the task JSON carries `parameters` when the server sends them;
 * otherwise they are read from the executed notebook's `injected-parameters`
 * cell (execution/submission.py writes it as papermill does), once per task.
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import type { INotebookContent } from '@jupyterlab/nbformat';
import { refreshIcon, ToolbarButton } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { requestAPI, ScheduleAPI, TaskAPI } from './api';
import { formatDuration } from './format';
import { trans } from './i18n';
import { ITask, isTerminal } from './models';
import type { TaskListModel } from './tasklist';
import {
  h,
  iconNode,
  setText,
  STATUS_LABELS,
  statusIcon,
  taskDuration
} from './utils';
import type { ICompareScope } from './values';
import {
  compareValues,
  formatValue,
  sortByValue,
  taskValue,
  valueNames,
  valueTitle
} from './valueutil';

const MAX_TASKS = 500;
const PAGE = 200;
/** parameters read from executed notebooks at the same time */
const PARALLEL = 4;

export interface ICompareOptions {
  scope: ICompareScope;
  model: TaskListModel;
  openTask: (id: string) => void;
  onError: (title: string, error: unknown) => void;
}

type Params = { [name: string]: unknown };

/** A column: `name`, `status`, `duration`, `param:NAME` or `value:NAME`. */
interface IColumn {
  key: string;
  label: string;
  get: (task: ITask) => unknown;
  text: (task: ITask) => string;
  title?: (task: ITask) => string;
}

/** `"resnet"` → 'resnet', `0.1` → 0.1, `True` → true; anything else stays text. */
export function parseLiteral(text: string): unknown {
  const t = text.trim();
  const words: { [k: string]: unknown } = {
    True: true,
    False: false,
    None: null
  };
  if (t in words) {
    return words[t];
  }
  try {
    return JSON.parse(t);
  } catch {
    const quoted = /^'(.*)'$/s.exec(t);
    return quoted ? quoted[1] : t;
  }
}

/** The parameters of an executed notebook's `injected-parameters` cell. */
export function injectedParameters(nb: INotebookContent | null): Params {
  const out: Params = {};
  const cell = (nb?.cells ?? []).find(c => {
    const tags = (c.metadata as { tags?: unknown })?.tags;
    return Array.isArray(tags) && tags.includes('injected-parameters');
  });
  if (!cell) {
    return out;
  }
  const source = Array.isArray(cell.source)
    ? cell.source.join('')
    : String(cell.source ?? '');
  for (const line of source.split('\n')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (m) {
      out[m[1]] = parseLiteral(m[2]);
    }
  }
  return out;
}

/** Does a task belong to the scope? */
export function inScope(task: ITask, scope: ICompareScope): boolean {
  if (scope.tag) {
    return task.tags.includes(scope.tag);
  }
  return !!scope.schedule && task.schedule_id === scope.schedule;
}

export class CompareView extends Widget {
  constructor(options: ICompareOptions) {
    super();
    this.scope = { ...options.scope };
    this._options = options;
    this.addClass('jp-TaskRun-compare');
    this._title = h('h1', 'jp-TaskRun-compareTitle');
    this._summary = h('div', 'jp-TaskRun-compareSummary');
    this._error = h('div', 'jp-TaskRun-error');
    this._error.hidden = true;
    this._table = h('table', 'jp-TaskRun-compareTable');
    this._empty = h('div', 'jp-TaskRun-empty');
    const scroll = h('div', 'jp-TaskRun-compareScroll');
    scroll.appendChild(this._table);
    this.node.append(
      this._title,
      this._summary,
      this._error,
      this._empty,
      scroll
    );
    setText(this._title, this.label);
    options.model.taskChanged.connect(this._onTask, this);
    options.model.taskDeleted.connect(this._onDeleted, this);
    void this.load();
  }

  readonly scope: ICompareScope;

  /** "Compare #tag" / "Compare schedule …" */
  get label(): string {
    return this.scope.tag
      ? trans.__('Compare #%1', this.scope.tag)
      : trans.__('Compare schedule %1', this._scheduleName);
  }

  /** The tasks shown, in the table's order. */
  get tasks(): ITask[] {
    return this._ordered();
  }

  async load(): Promise<void> {
    const token = ++this._token;
    try {
      if (this.scope.schedule && !this._scheduleName) {
        this._scheduleName = this.scope.schedule.slice(0, 8);
        ScheduleAPI.get(this.scope.schedule)
          .then(s => {
            this._scheduleName = s.name || this._scheduleName;
            this._retitle();
          })
          .catch(() => undefined);
      }
      const tasks: ITask[] = [];
      let cursor: string | null = null;
      do {
        const page = await TaskAPI.list({
          tag: this.scope.tag,
          schedule: this.scope.schedule,
          limit: PAGE,
          cursor
        });
        tasks.push(...page.tasks);
        cursor = page.next_cursor ?? null;
      } while (cursor && tasks.length < MAX_TASKS);
      if (token !== this._token || this.isDisposed) {
        return;
      }
      this._more = cursor !== null;
      this._tasks = new Map(tasks.map(t => [t.id, t]));
      this._error.hidden = true;
      this._render();
      void this._loadParameters();
    } catch (error) {
      if (token === this._token && !this.isDisposed) {
        setText(this._error, trans.__('Could not load the tasks: %1', error));
        this._error.hidden = false;
      }
    }
  }

  /** Sort by a column (`name`, `status`, `duration`, `param:X`, `value:X`). */
  sortBy(key: string): void {
    if (this._sort?.key === key) {
      this._sort = { key, descending: !this._sort.descending };
    } else {
      this._sort = { key, descending: false };
    }
    this._render();
  }

  override dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._options.model.taskChanged.disconnect(this._onTask, this);
    this._options.model.taskDeleted.disconnect(this._onDeleted, this);
    if (this._frame !== null) {
      window.cancelAnimationFrame(this._frame);
    }
    super.dispose();
  }

  private _retitle(): void {
    setText(this._title, this.label);
    const owner = this.parent;
    if (owner) {
      owner.title.label = this.label;
    }
  }

  private _onTask(_: TaskListModel, task: ITask): void {
    const old = this._tasks.get(task.id);
    if (!old && !inScope(task, this.scope)) {
      return;
    }
    this._tasks.set(task.id, { ...old, ...task });
    if (isTerminal(task.status) && !this._params.has(task.id)) {
      void this._loadParameters();
    }
    this._schedule();
  }

  private _onDeleted(_: TaskListModel, id: string): void {
    if (this._tasks.delete(id)) {
      this._schedule();
    }
  }

  private _schedule(): void {
    if (this._frame === null) {
      this._frame = window.requestAnimationFrame(() => {
        this._frame = null;
        this._render();
      });
    }
  }

  /** Parameters from the task JSON, else from the executed notebook. */
  private async _loadParameters(): Promise<void> {
    const todo = [...this._tasks.values()].filter(
      t => !this._params.has(t.id) && (t.parameters || isTerminal(t.status))
    );
    todo.forEach(t => this._params.set(t.id, t.parameters ?? null));
    const fetchOne = async (task: ITask): Promise<void> => {
      try {
        const nb = await requestAPI<INotebookContent>(
          `tasks/${encodeURIComponent(task.id)}/notebook`
        );
        this._params.set(task.id, injectedParameters(nb));
      } catch {
        this._params.set(task.id, {}); // no executed notebook (e.g. cancelled while queued)
      }
    };
    const queue = todo.filter(t => !t.parameters);
    const workers = Array.from({ length: PARALLEL }, async () => {
      for (let t = queue.shift(); t; t = queue.shift()) {
        await fetchOne(t);
        this._schedule();
      }
    });
    await Promise.all(workers);
  }

  private _columns(): IColumn[] {
    const tasks = [...this._tasks.values()];
    const params = new Set<string>();
    for (const t of tasks) {
      Object.keys(this._params.get(t.id) ?? {}).forEach(p => params.add(p));
    }
    const param = (task: ITask, name: string): unknown => {
      const p = this._params.get(task.id);
      return p && Object.prototype.hasOwnProperty.call(p, name)
        ? p[name]
        : undefined;
    };
    const columns: IColumn[] = [
      {
        key: 'name',
        label: trans.__('Name'),
        get: t => t.name || t.id,
        text: t => t.name || t.id,
        title: t => `${t.name} (${t.id})`
      },
      {
        key: 'status',
        label: trans.__('Status'),
        get: t => STATUS_LABELS[t.status],
        text: t => STATUS_LABELS[t.status]
      },
      {
        key: 'duration',
        label: trans.__('Duration'),
        get: t => taskDuration(t) ?? undefined,
        text: t => formatDuration(taskDuration(t))
      }
    ];
    for (const name of [...params].sort()) {
      columns.push({
        key: `param:${name}`,
        label: name,
        get: t => param(t, name),
        text: t => formatValue(param(t, name), 30),
        title: t => valueTitle(name, param(t, name))
      });
    }
    for (const name of valueNames(tasks)) {
      columns.push({
        key: `value:${name}`,
        label: name,
        get: t => taskValue(t, name),
        text: t => formatValue(taskValue(t, name), 30),
        title: t => valueTitle(name, taskValue(t, name))
      });
    }
    return columns;
  }

  private _ordered(columns: IColumn[] = this._columns()): ITask[] {
    // default: oldest first (a series of runs reads left to right in time)
    const tasks = [...this._tasks.values()].sort((a, b) =>
      compareValues(a.created_at, b.created_at)
    );
    const sort = this._sort;
    const column = sort && columns.find(c => c.key === sort.key);
    return column ? sortByValue(tasks, column.get, sort.descending) : tasks;
  }

  private _render(): void {
    if (this.isDisposed) {
      return;
    }
    const columns = this._columns();
    const tasks = this._ordered(columns);
    const nParams = columns.filter(c => c.key.startsWith('param:')).length;
    const nValues = columns.filter(c => c.key.startsWith('value:')).length;
    setText(
      this._summary,
      trans.__(
        '%1 tasks · %2 parameters · %3 values%4',
        tasks.length,
        nParams,
        nValues,
        this._more ? trans.__(' (the first %1 only)', MAX_TASKS) : ''
      )
    );
    this._empty.hidden = tasks.length > 0;
    setText(
      this._empty,
      this.scope.tag
        ? trans.__('No task is tagged %1.', this.scope.tag)
        : trans.__('This schedule has no tasks (any more).')
    );
    const head = h('thead');
    const headRow = h('tr');
    for (const c of columns) {
      const th = h('th', 'jp-TaskRun-compareHead');
      th.dataset.column = c.key;
      const kind = c.key.split(':')[0];
      th.classList.add(`jp-mod-${kind}`);
      const dir =
        this._sort?.key === c.key
          ? this._sort.descending
            ? 'descending'
            : 'ascending'
          : 'none';
      th.setAttribute('aria-sort', dir);
      const b = h('button', 'jp-TaskRun-compareSort');
      b.textContent =
        c.label +
        (dir === 'ascending' ? ' ▲' : dir === 'descending' ? ' ▼' : '');
      b.title =
        kind === 'param'
          ? trans.__('Parameter %1: click to sort', c.label)
          : kind === 'value'
            ? trans.__('Recorded value %1: click to sort', c.label)
            : trans.__('Click to sort');
      b.addEventListener('click', () => this.sortBy(c.key));
      th.appendChild(b);
      headRow.appendChild(th);
    }
    head.appendChild(headRow);
    const body = h('tbody');
    for (const task of tasks) {
      const tr = h('tr', `jp-TaskRun-compareRow jp-mod-${task.status}`);
      tr.dataset.taskId = task.id;
      for (const c of columns) {
        const td = h('td', '');
        td.dataset.column = c.key;
        if (c.key === 'name') {
          const open = h('button', 'jp-TaskRun-linkButton', c.text(task));
          open.addEventListener('click', () => this._options.openTask(task.id));
          td.appendChild(open);
        } else if (c.key === 'status') {
          td.append(iconNode(statusIcon(task.status)), c.text(task));
        } else {
          td.textContent = c.text(task);
        }
        if (c.title) {
          td.title = c.title(task);
        }
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    this._table.replaceChildren(head, body);
  }

  private _options: ICompareOptions;
  private _tasks = new Map<string, ITask>();
  private _params = new Map<string, Params | null>();
  private _sort: { key: string; descending: boolean } | null = null;
  private _scheduleName = '';
  private _more = false;
  private _token = 0;
  private _frame: number | null = null;
  private _title: HTMLElement;
  private _summary: HTMLElement;
  private _error: HTMLElement;
  private _empty: HTMLElement;
  private _table: HTMLTableElement;
}

/** A stable widget id for a scope. */
export function compareId(scope: ICompareScope): string {
  const key = scope.tag ? `tag-${scope.tag}` : `schedule-${scope.schedule}`;
  return `jupyter-taskrun-compare-${encodeURIComponent(key).replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

/** The Compare view in a MainAreaWidget with a refresh button. */
export function createCompareWidget(
  options: ICompareOptions
): MainAreaWidget<CompareView> {
  const content = new CompareView(options);
  const widget = new MainAreaWidget({ content });
  widget.id = compareId(options.scope);
  widget.addClass('jp-TaskRun-compareWidget');
  widget.title.label = content.label;
  widget.title.closable = true;
  widget.toolbar.addItem(
    'refresh',
    new ToolbarButton({
      icon: refreshIcon,
      tooltip: trans.__('Reload the tasks from the server'),
      onClick: () => void content.load()
    })
  );
  return widget;
}

/**
 * The "Tasks" panel of the left sidebar.
 */
import {
  clearIcon,
  refreshIcon,
  searchIcon,
  stopIcon
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { TaskAPI } from './api';
import { formatDuration } from './format';
import { tasksIcon } from './icons';
import { ITask, isTerminal, TASK_STATUSES, TaskStatus } from './models';
import { trans } from './i18n';
import { TaskListModel } from './tasklist';
import { ValueColumns } from './valuecolumns';
import {
  formatAge,
  formatTime,
  h,
  iconNode,
  progressFraction,
  setText,
  STATUS_LABELS,
  statusIcon,
  taskDuration
} from './utils';

export interface ITaskPanelOptions {
  model: TaskListModel;
  /** Open the detail view of a task. */
  openTask: (id: string) => void;
  /** Report a failed action to the user. */
  onError?: (title: string, error: unknown) => void;
  /** "Clear finished…" (asks, then deletes); no button without it. */
  clearFinished?: () => void;
  /** Show the "Tasks" heading (false under the sidebar's view switch). */
  showTitle?: boolean;
}

interface IRow {
  node: HTMLLIElement;
  icon: HTMLElement;
  iconStatus: TaskStatus | null;
  name: HTMLElement;
  duration: HTMLElement;
  owner: HTMLElement;
  age: HTMLElement;
  tags: HTMLElement;
  progress: HTMLElement;
  bar: HTMLElement;
  progressLabel: HTMLElement;
  cancel: HTMLButtonElement;
  values: HTMLElement;
}

export class TaskPanel extends Widget {
  constructor(options: ITaskPanelOptions) {
    super();
    this._model = options.model;
    this._openTask = options.openTask;
    this._onError = options.onError ?? (() => undefined);
    this._clearFinished = options.clearFinished ?? null;
    this._showTitle = options.showTitle ?? true;
    this.id = 'jupyter-taskrun-panel';
    this.addClass('jp-TaskRun-panel');
    this.title.icon = tasksIcon;
    this.title.caption = trans.__('Tasks');
    this._build();
    this._model.changed.connect(this._scheduleRender, this);
    this._render();
  }

  get model(): TaskListModel {
    return this._model;
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

  protected override onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (this.isVisible) {
      this._model.setActive(true);
      this._startTicker();
    }
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
    this._stopTicker();
    this._model.changed.disconnect(this._scheduleRender, this);
    this._columns.dispose();
    super.dispose();
  }

  // ------------------------------------------------------------------ layout

  private _build(): void {
    const node = this.node;

    const header = h('div', 'jp-TaskRun-header');
    const title = h('h2', 'jp-TaskRun-title', 'Tasks');
    title.hidden = !this._showTitle;
    this._counts = h('div', 'jp-TaskRun-counts');
    this._runningCount = h('span', 'jp-TaskRun-count jp-mod-running');
    this._queuedCount = h('span', 'jp-TaskRun-count jp-mod-queued');
    this._counts.append(this._runningCount, this._queuedCount);
    this._live = h('span', 'jp-TaskRun-live');
    const refresh = h('button', 'jp-TaskRun-iconButton jp-mod-refresh');
    refresh.title = trans.__('Refresh the task list');
    refresh.setAttribute('aria-label', trans.__('Refresh'));
    refresh.appendChild(iconNode(refreshIcon));
    refresh.addEventListener('click', () => {
      this._model.reconnect();
      void this._model.refresh();
    });
    const top = h('div', 'jp-TaskRun-headerTop');
    top.append(title, this._live, h('span', 'jp-TaskRun-spacer'));
    const clearFinished = this._clearFinished;
    if (clearFinished) {
      const clear = h('button', 'jp-TaskRun-iconButton jp-mod-clearFinished');
      clear.title = trans.__(
        'Clear finished… (delete your finished tasks; asks first)'
      );
      clear.setAttribute('aria-label', trans.__('Clear finished tasks'));
      clear.appendChild(iconNode(clearIcon));
      clear.addEventListener('click', () => clearFinished());
      top.appendChild(clear);
    }
    top.appendChild(refresh);
    header.append(top, this._counts);

    const filters = h('div', 'jp-TaskRun-filters');
    const searchBox = h('div', 'jp-TaskRun-inputBox');
    searchBox.appendChild(iconNode(searchIcon, 'jp-TaskRun-inputIcon'));
    this._search = h('input', 'jp-TaskRun-search');
    this._search.type = 'search';
    this._search.placeholder = trans.__('Search (any part of the name)…');
    this._search.setAttribute('aria-label', trans.__('Search tasks by name'));
    this._search.addEventListener('input', () => this._onSearch());
    searchBox.appendChild(this._search);

    this._statusSelect = h('select', 'jp-TaskRun-statusFilter');
    this._statusSelect.setAttribute('aria-label', trans.__('Filter by status'));
    const all = h('option', '', 'All statuses');
    all.value = '';
    this._statusSelect.appendChild(all);
    for (const status of TASK_STATUSES) {
      const option = h('option', '', STATUS_LABELS[status]);
      option.value = status;
      this._statusSelect.appendChild(option);
    }
    this._statusSelect.addEventListener('change', () =>
      this._model.setFilters({
        status: this._statusSelect.value as TaskStatus | ''
      })
    );

    const tagBox = h('div', 'jp-TaskRun-inputBox');
    this._tag = h('input', 'jp-TaskRun-tagFilter');
    this._tag.placeholder = trans.__('Filter by tag');
    this._tag.setAttribute('aria-label', trans.__('Filter by tag'));
    this._tagList = h('datalist');
    this._tagList.id = `jp-TaskRun-tags-${Private.nextId()}`;
    this._tag.setAttribute('list', this._tagList.id);
    // applies as you type (a tag prefix over the loaded tasks; a complete
    // known tag is also filtered by the server)
    this._tag.addEventListener('input', () => this._onTag());
    this._tag.addEventListener('change', () =>
      this._model.setFilters({ tag: this._tag.value })
    );
    this._tag.addEventListener('keydown', event => {
      if (event.key === 'Enter') {
        this._model.setFilters({ tag: this._tag.value });
      }
    });
    tagBox.append(this._tag, this._tagList);

    const filterRow = h('div', 'jp-TaskRun-filterRow');
    filterRow.append(this._statusSelect, tagBox);
    this._columns = new ValueColumns(this._model, () => this._render());
    filters.append(searchBox, filterRow, this._columns.node);

    this._error = h('div', 'jp-TaskRun-error');
    this._list = h('ul', 'jp-TaskRun-list');
    this._list.setAttribute('role', 'list');
    this._empty = h('div', 'jp-TaskRun-empty');

    this._searchHint = h('div', 'jp-TaskRun-searchHint');
    this._more = h(
      'button',
      'jp-mod-styled jp-TaskRun-more',
      trans.__('Load more')
    );
    this._more.addEventListener('click', () => void this._model.loadMore());

    const body = h('div', 'jp-TaskRun-body');
    body.append(
      this._error,
      this._list,
      this._empty,
      this._searchHint,
      this._more
    );
    node.append(header, filters, body);
  }

  private _onSearch(): void {
    if (this._searchTimer !== null) {
      window.clearTimeout(this._searchTimer);
    }
    this._searchTimer = window.setTimeout(() => {
      this._searchTimer = null;
      this._model.setFilters({ search: this._search.value });
    }, 150);
  }

  private _onTag(): void {
    if (this._tagTimer !== null) {
      window.clearTimeout(this._tagTimer);
    }
    this._tagTimer = window.setTimeout(() => {
      this._tagTimer = null;
      this._model.setFilters({ tag: this._tag.value });
    }, 150);
  }

  // ------------------------------------------------------------------ render

  private _scheduleRender(): void {
    if (this._frame !== null) {
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
    const counts = model.counts;
    setText(this._runningCount, `${counts.running} running`);
    setText(this._queuedCount, `${counts.queued} queued`);
    this._runningCount.classList.toggle('jp-mod-zero', counts.running === 0);
    this._queuedCount.classList.toggle('jp-mod-zero', counts.queued === 0);

    const mode = model.mode;
    const liveText: { [k: string]: string } = {
      stream: trans.__('live'),
      polling: trans.__('polling'),
      connecting: '…',
      reconnecting: trans.__('reconnecting…')
    };
    setText(this._live, liveText[mode] ?? '');
    this._live.dataset.mode = mode;
    const liveTitle: { [k: string]: string } = {
      stream: trans.__('Updates stream live from the server'),
      polling: trans.__('The live stream is unavailable; polling the server'),
      connecting: trans.__('Connecting to the server…'),
      reconnecting: trans.__(
        'The server is not answering; reconnecting (the list below may be out of date)'
      )
    };
    this._live.title = liveTitle[mode] ?? '';
    this.node.classList.toggle('jp-mod-offline', model.offline);

    const error = model.offline
      ? trans.__('The server is not answering — reconnecting…')
      : model.lastError
        ? trans.__('Could not load tasks: %1', model.lastError)
        : '';
    setText(this._error, error);
    this._error.hidden = !error;
    this._error.classList.toggle('jp-mod-offline', model.offline);

    this._columns.update(model.tasks);
    const tasks = this._columns.order(model.tasks);
    const seen = new Set<string>();
    const now = Date.now();
    let previous: HTMLElement | null = null;
    for (const task of tasks) {
      seen.add(task.id);
      let row = this._rows.get(task.id);
      if (!row) {
        row = this._createRow(task.id);
        this._rows.set(task.id, row);
      }
      this._updateRow(row, task, now);
      const expected: ChildNode | null = previous
        ? previous.nextSibling
        : this._list.firstChild;
      if (expected !== row.node) {
        this._list.insertBefore(row.node, expected);
      }
      previous = row.node;
    }
    for (const [id, row] of this._rows) {
      if (!seen.has(id)) {
        row.node.remove();
        this._rows.delete(id);
      }
    }

    const filtered =
      model.filters.status !== '' ||
      model.filters.tag.trim() !== '' ||
      model.filters.search.trim() !== '';
    this._empty.hidden = tasks.length > 0 || model.loading;
    setText(
      this._empty,
      filtered
        ? 'No tasks match these filters.'
        : 'No tasks yet. Use “Run as task” on a notebook, a file or selected cells.'
    );
    this._more.hidden = !model.hasMore;
    const searching =
      model.filters.search.trim() !== '' || model.filters.tag.trim() !== '';
    this._searchHint.hidden = !(searching && model.hasMore);
    setText(
      this._searchHint,
      trans.__(
        'Searched the %1 most recent tasks; “Load more” searches older ones.',
        model.loadedCount
      )
    );

    const tags = model.knownTags;
    const tagKey = tags.join('\u0000');
    if (tagKey !== this._tagKey) {
      this._tagKey = tagKey;
      this._tagList.replaceChildren(
        ...tags.map(t => {
          const o = h('option');
          o.value = t;
          return o;
        })
      );
    }
  }

  private _createRow(id: string): IRow {
    const node = h('li', 'jp-TaskRun-row');
    node.dataset.taskId = id;
    node.tabIndex = 0;
    node.setAttribute('role', 'listitem');
    const icon = h('span', 'jp-TaskRun-statusIcon');
    const main = h('div', 'jp-TaskRun-rowMain');
    const top = h('div', 'jp-TaskRun-rowTop');
    const name = h('span', 'jp-TaskRun-name');
    const duration = h('span', 'jp-TaskRun-duration');
    top.append(name, duration);
    const meta = h('div', 'jp-TaskRun-rowMeta');
    const owner = h('span', 'jp-TaskRun-owner');
    const age = h('span', 'jp-TaskRun-age');
    const tags = h('span', 'jp-TaskRun-tags');
    meta.append(age, owner, tags);
    const progress = h('div', 'jp-TaskRun-progress');
    const track = h('div', 'jp-TaskRun-progressTrack');
    const bar = h('div', 'jp-TaskRun-progressBar');
    track.appendChild(bar);
    const progressLabel = h('span', 'jp-TaskRun-progressLabel');
    progress.append(track, progressLabel);
    const values = h('div', 'jp-TaskRun-rowValues');
    main.append(top, meta, values, progress);
    const cancel = h('button', 'jp-TaskRun-iconButton jp-TaskRun-rowCancel');
    cancel.title = trans.__('Cancel this task');
    cancel.setAttribute('aria-label', trans.__('Cancel task'));
    cancel.appendChild(iconNode(stopIcon));
    cancel.addEventListener('click', event => {
      event.stopPropagation();
      this._cancelling.add(id);
      this._scheduleRender();
      TaskAPI.cancel(id)
        .then(task => this._model.upsert(task))
        .catch(error => this._onError(trans.__('Cancel failed'), error))
        .finally(() => {
          this._cancelling.delete(id);
          this._scheduleRender();
        });
    });
    node.append(icon, main, cancel);
    node.addEventListener('click', event => {
      if (event.ctrlKey || event.metaKey) {
        this._toggle(id); // multi-select: Ctrl/Cmd-click
      } else {
        this._select(id);
      }
    });
    node.addEventListener('contextmenu', () => {
      if (!this._selection.has(id)) {
        this._selection = new Set([id]);
        this._scheduleRender();
      }
    });
    node.addEventListener('keydown', event => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        this._select(id);
      }
    });
    return {
      node,
      icon,
      iconStatus: null,
      name,
      duration,
      owner,
      age,
      tags,
      progress,
      bar,
      progressLabel,
      cancel,
      values
    };
  }

  /** The selected task ids (Ctrl/Cmd-click adds; a plain click selects one). */
  get selection(): string[] {
    const shown = new Set(this._model.tasks.map(t => t.id));
    return [...this._selection].filter(id => shown.has(id));
  }

  private _toggle(id: string): void {
    if (this._selection.has(id)) {
      this._selection.delete(id);
    } else {
      this._selection.add(id);
    }
    this._scheduleRender();
  }

  private _select(id: string): void {
    this._selection = new Set([id]);
    for (const [rowId, row] of this._rows) {
      row.node.classList.toggle('jp-mod-selected', this._selection.has(rowId));
    }
    this._openTask(id);
  }

  private _updateRow(row: IRow, task: ITask, now: number): void {
    const node = row.node;
    if (node.dataset.status !== task.status) {
      node.dataset.status = task.status;
      for (const status of TASK_STATUSES) {
        node.classList.toggle(`jp-mod-${status}`, status === task.status);
      }
    }
    node.classList.toggle('jp-mod-selected', this._selection.has(task.id));
    node.setAttribute('aria-selected', String(this._selection.has(task.id)));
    if (row.iconStatus !== task.status) {
      row.iconStatus = task.status;
      row.icon.replaceChildren();
      row.icon.appendChild(
        iconNode(statusIcon(task.status), '', STATUS_LABELS[task.status])
      );
      row.icon.title = STATUS_LABELS[task.status];
    }
    setText(row.name, task.name || task.id);
    const duration = taskDuration(task, now);
    setText(
      row.duration,
      duration === null
        ? task.status === 'queued'
          ? task.queue_position
            ? trans.__('#%1 in queue', task.queue_position)
            : trans.__('queued')
          : ''
        : formatDuration(duration)
    );
    setText(row.owner, shortOwner(task.owner));
    row.owner.title = task.owner ? `Owner: ${task.owner}` : '';
    row.owner.hidden = !task.owner;
    setText(row.age, formatAge(task.created_at, now));
    setText(
      row.tags,
      task.tags.length ? task.tags.map(t => `#${t}`).join(' ') : ''
    );
    row.tags.hidden = task.tags.length === 0;
    this._columns.renderCells(row.values, task);

    const fraction = progressFraction(task);
    const active = !isTerminal(task.status);
    const showProgress = task.status === 'running' || fraction !== null;
    row.progress.hidden = !showProgress;
    row.progress.classList.toggle(
      'jp-mod-indeterminate',
      fraction === null && task.status === 'running'
    );
    const width = fraction === null ? '' : `${(fraction * 100).toFixed(1)}%`;
    if (row.bar.style.width !== width) {
      row.bar.style.width = width;
    }
    const p = task.progress;
    let label = '';
    if (p && fraction !== null) {
      label = `${Math.round(fraction * 100)}%`;
    } else if (p && p.value) {
      label = `${p.value}`;
    }
    if (p && p.message) {
      label = label ? `${label} · ${p.message}` : p.message;
    }
    setText(row.progressLabel, label);
    row.cancel.hidden = !active;
    row.cancel.disabled = this._model.offline || this._cancelling.has(task.id);
    row.cancel.title = this._model.offline
      ? trans.__('The server is not answering; cancel once it is back')
      : this._cancelling.has(task.id)
        ? trans.__('Cancellation requested…')
        : trans.__('Cancel this task');

    const title = [
      `${task.name} (${task.id})`,
      `Status: ${STATUS_LABELS[task.status]}`,
      task.owner ? `Owner: ${task.owner}` : '',
      `Created: ${formatTime(task.created_at)}`,
      task.started_at ? `Started: ${formatTime(task.started_at)}` : '',
      task.finished_at ? `Finished: ${formatTime(task.finished_at)}` : '',
      task.error?.reason ? `Reason: ${task.error.reason}` : ''
    ]
      .filter(Boolean)
      .join('\n');
    if (node.title !== title) {
      node.title = title;
    }
  }

  // ------------------------------------------------------------------ ticker

  private _startTicker(): void {
    if (this._ticker === null) {
      this._ticker = window.setInterval(() => {
        if (!document.hidden) {
          this._render();
        }
      }, 1000);
    }
  }

  private _stopTicker(): void {
    if (this._ticker !== null) {
      window.clearInterval(this._ticker);
      this._ticker = null;
    }
  }

  private _model: TaskListModel;
  private _openTask: (id: string) => void;
  private _onError: (title: string, error: unknown) => void;
  private _clearFinished: (() => void) | null;
  private _showTitle: boolean;
  private _rows = new Map<string, IRow>();
  private _selection = new Set<string>();
  private _frame: number | null = null;
  private _ticker: number | null = null;
  private _searchTimer: number | null = null;
  private _tagTimer: number | null = null;
  private _cancelling = new Set<string>();
  private _searchHint!: HTMLElement;
  private _columns!: ValueColumns;
  private _tagKey = '';
  private _counts!: HTMLElement;
  private _runningCount!: HTMLElement;
  private _queuedCount!: HTMLElement;
  private _live!: HTMLElement;
  private _search!: HTMLInputElement;
  private _statusSelect!: HTMLSelectElement;
  private _tag!: HTMLInputElement;
  private _tagList!: HTMLDataListElement;
  private _error!: HTMLElement;
  private _list!: HTMLUListElement;
  private _empty!: HTMLElement;
  private _more!: HTMLButtonElement;
}

/** Anonymous Jupyter users are 32-hex ids: show the start only. */
function shortOwner(owner: string): string {
  return /^[0-9a-f]{32}$/i.test(owner) ? owner.slice(0, 8) : owner;
}

namespace Private {
  let counter = 0;
  export function nextId(): number {
    counter += 1;
    return counter;
  }
}

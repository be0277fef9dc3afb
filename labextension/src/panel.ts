/**
 * The "Tasks" panel of the left sidebar: counts, filters (status, tag,
 * name, created dates), the sort, and the task list.
 *
 * Guarantees: a long list keeps a bounded number of rows in the DOM and
 * loads the next page as it is scrolled (listwindow.ts); the settings
 * (settings.ts: columns) apply live; every text is translated.
 */
import { clearIcon, refreshIcon, searchIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Debouncer } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { tasksIcon } from './icons';
import { TASK_STATUSES, TaskStatus } from './models';
import { trans } from './i18n';
import { isFieldSort, ListControls, orderByField } from './listcontrols';
import { ListWindow } from './listwindow';
import { BatchGroups } from './batchgroups';
import { confirmCancel } from './cascade';
import { settings } from './settings';
import { secondTicker } from './ticker';
import { createRow, IRow, updateRow } from './taskrow';
import { TaskListModel } from './tasklist';
import { ValueColumns } from './valuecolumns';
import { h, iconNode, setText, STATUS_LABELS } from './utils';

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
    settings.changed.connect(this._scheduleRender, this);
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
    this._ticker.dispose();
    this._searchLater.dispose();
    this._tagLater.dispose();
    this._model.changed.disconnect(this._scheduleRender, this);
    settings.changed.disconnect(this._scheduleRender, this);
    this._columns.dispose();
    this._controls.dispose();
    this._window.dispose();
    super.dispose();
  }

  // ------------------------------------------------------------------ layout

  private _build(): void {
    const node = this.node;

    const header = h('div', 'jp-TaskRun-header');
    const title = h('h2', 'jp-TaskRun-title', trans.__('Tasks'));
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
    const all = h('option', '', trans.__('All statuses'));
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
    this._controls = new ListControls(this._model);
    filters.append(
      searchBox,
      filterRow,
      this._controls.node,
      this._columns.node
    );

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
    this._window = new ListWindow({
      scroller: body,
      list: this._list,
      onScroll: () => this._render(),
      loadMore: () => void this._model.loadMore()
    });
  }

  // typing applies 150 ms after the last key
  private _onSearch(): void {
    void this._searchLater.invoke();
  }

  private _onTag(): void {
    void this._tagLater.invoke();
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
    setText(this._runningCount, trans.__('%1 running', counts.running));
    setText(this._queuedCount, trans.__('%1 queued', counts.queued));
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
    const sort = model.filters.sort;
    const tasks = isFieldSort(sort)
      ? orderByField(model.tasks, sort)
      : this._columns.order(model.tasks);
    const seen = new Set<string>();
    const now = Date.now();
    const columns = settings.current.columns;
    let previous: HTMLElement | null = null;
    // a batch's tasks fold into one row that expands (batchgroups.ts)
    const items = this._batches.items(tasks);
    const [start, end] = this._window.range(items.length, model.hasMore);
    for (const item of items.slice(start, end)) {
      if (item.group) {
        const node = this._batches.render(item.group);
        const at: ChildNode | null = previous
          ? previous.nextSibling
          : this._list.firstChild;
        if (at !== node) {
          this._list.insertBefore(node, at);
        }
        previous = node;
        continue;
      }
      const task = item.task;
      seen.add(task.id);
      let row = this._rows.get(task.id);
      if (!row) {
        row = this._createRow(task.id);
        this._rows.set(task.id, row);
      }
      updateRow(row, task, now, {
        selected: this._selection.has(task.id),
        cancelling: this._cancelling.has(task.id),
        offline: model.offline,
        columns
      });
      this._columns.renderCells(row.values, task);
      row.node.classList.toggle('jp-mod-inBatch', item.inBatch);
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
    this._batches.prune();
    this._window.measure(end - start);

    const filtered =
      model.filters.status !== '' ||
      model.filters.createdAfter !== '' ||
      model.filters.createdBefore !== '' ||
      model.filters.tag.trim() !== '' ||
      model.filters.search.trim() !== '';
    this._empty.hidden = tasks.length > 0 || model.loading;
    setText(
      this._empty,
      filtered
        ? trans.__('No tasks match these filters.')
        : trans.__(
            'No tasks yet. Use “Run as task” on a notebook, a file or selected cells.'
          )
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
    return createRow(id, {
      cancel: id => this._cancel(id),
      click: (id, toggle) => (toggle ? this._toggle(id) : this._select(id)),
      context: id => {
        if (!this._selection.has(id)) {
          this._selection = new Set([id]);
          this._scheduleRender();
        }
      }
    });
  }

  private _cancel(id: string): void {
    this._cancelling.add(id);
    this._scheduleRender();
    // asks first when tasks wait for this one (cascade.ts); null: kept
    confirmCancel(id, this._model.get(id)?.name)
      .then(task => task && this._model.upsert(task))
      .catch(error => this._onError(trans.__('Cancel failed'), error))
      .finally(() => {
        this._cancelling.delete(id);
        this._scheduleRender();
      });
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

  // ------------------------------------------------------------------ ticker

  // durations and ages move on: one render a second while shown (the poll
  // stands by while the browser tab is hidden)
  private _startTicker(): void {
    void this._ticker.start();
  }

  private _stopTicker(): void {
    void this._ticker.stop();
  }

  private _model: TaskListModel;
  private _openTask: (id: string) => void;
  private _onError: (title: string, error: unknown) => void;
  private _clearFinished: (() => void) | null;
  private _showTitle: boolean;
  private _rows = new Map<string, IRow>();
  private _batches = new BatchGroups(() => this._scheduleRender());
  private _selection = new Set<string>();
  private _frame: number | null = null;
  private _ticker = secondTicker('sidebar', () => this._render());
  private _window!: ListWindow;
  private _controls!: ListControls;
  private _searchLater = new Debouncer(
    () => this._model.setFilters({ search: this._search.value }),
    150
  );
  private _tagLater = new Debouncer(
    () => this._model.setFilters({ tag: this._tag.value }),
    150
  );
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

namespace Private {
  let counter = 0;
  export function nextId(): number {
    counter += 1;
    return counter;
  }
}

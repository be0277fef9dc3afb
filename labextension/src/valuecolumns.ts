/**
 * Recorded values as columns of the sidebar's task list (panel.ts): a small
 * chooser ("Values ▾", a checkbox per name the loaded tasks recorded), a
 * header cell per chosen value (click: sort by it ascending, again:
 * descending, again: newest first) and a cell per row.
 *
 * Sorting is the server's (`?sort=values.NAME`, through the list model's
 * filters, so the right page is loaded); the loaded rows are ordered by the
 * same rule here (valueutil.ts), so live updates keep their place. The
 * chosen columns are the `valueColumns` setting (settings.ts: the Settings
 * Editor changes them live too); the sort is remembered with the list's
 * other sorts (listcontrols.ts).
 */
import { caretDownIcon } from '@jupyterlab/ui-components';

import { trans } from './i18n';
import type { ITask } from './models';
import { settings } from './settings';
import type { TaskListModel } from './tasklist';
import { h, iconNode } from './utils';
import {
  formatValue,
  parseSort,
  sortByValue,
  taskValue,
  valueNames,
  valueTitle
} from './valueutil';

/** columns shown at most (the sidebar is narrow) */
const MAX_COLUMNS = 6;

export class ValueColumns {
  constructor(model: TaskListModel, onChange: () => void) {
    this._model = model;
    this._onChange = onChange;
    this._columns = settings.current.valueColumns.slice(0, MAX_COLUMNS);
    settings.changed.connect(this._onSettings, this);
    this.node = h('div', 'jp-TaskRun-valueColumns');
    this._toggle = h('button', 'jp-TaskRun-valueChooserButton');
    this._toggle.append(
      h('span', '', trans.__('Values')),
      iconNode(caretDownIcon)
    );
    this._toggle.title = trans.__('Show recorded values as columns');
    this._toggle.setAttribute('aria-haspopup', 'true');
    this._toggle.addEventListener('click', event => {
      event.stopPropagation();
      this._setOpen(this._menu.hidden);
    });
    this._menu = h('div', 'jp-TaskRun-valueChooser');
    this._menu.hidden = true;
    this._menu.setAttribute('role', 'menu');
    this._menu.addEventListener('click', event => event.stopPropagation());
    this._header = h('div', 'jp-TaskRun-valueHeader');
    this.node.append(this._toggle, this._header, this._menu);
    this._onDocumentClick = () => this._setOpen(false);
    document.addEventListener('click', this._onDocumentClick);
    this._renderHeader();
  }

  /** The chooser and the header cells (above the list). */
  readonly node: HTMLElement;

  /** The value names shown as columns. */
  get columns(): readonly string[] {
    return this._columns;
  }

  /** Show `name` as a column (or hide it). */
  setColumn(name: string, shown: boolean): void {
    const has = this._columns.includes(name);
    if (shown && !has && this._columns.length < MAX_COLUMNS) {
      this._columns = [...this._columns, name];
    } else if (!shown && has) {
      this._columns = this._columns.filter(c => c !== name);
      if (parseSort(this._model.filters.sort)?.name === name) {
        this._model.setFilters({ sort: '' });
      }
    } else {
      return;
    }
    this._store();
    this._renderHeader();
    this._renderMenu();
    this._onChange();
  }

  /** Sort by a value column: ascending → descending → newest first. */
  cycleSort(name: string): void {
    const current = parseSort(this._model.filters.sort);
    let sort = `values.${name}`;
    if (current?.name === name) {
      sort = current.descending ? '' : `-values.${name}`;
    }
    this._model.setFilters({ sort });
    this._renderHeader();
  }

  /** The loaded tasks in the list's order (by the sorted value, if any). */
  order(tasks: readonly ITask[]): readonly ITask[] {
    const sort = parseSort(this._model.filters.sort);
    return sort
      ? sortByValue(tasks, t => taskValue(t, sort.name), sort.descending)
      : tasks;
  }

  /** Refresh the chooser's names (values recorded by the loaded tasks). */
  update(tasks: readonly ITask[]): void {
    const names = valueNames(tasks);
    for (const c of this._columns) {
      if (!names.includes(c)) {
        names.push(c);
      }
    }
    names.sort();
    const key = names.join('\u0000');
    if (key !== this._namesKey) {
      this._namesKey = key;
      this._names = names;
      this._renderMenu();
    }
    this._renderHeader();
  }

  /** Fill a row's value cells. */
  renderCells(host: HTMLElement, task: ITask): void {
    const columns = this._columns;
    host.hidden = columns.length === 0;
    const key = JSON.stringify(columns.map(c => taskValue(task, c) ?? null));
    if (host.dataset.key === key && host.childElementCount === columns.length) {
      return;
    }
    host.dataset.key = key;
    host.replaceChildren(
      ...columns.map(name => {
        const value = taskValue(task, name);
        const cell = h('span', 'jp-TaskRun-valueCell', formatValue(value, 14));
        cell.dataset.name = name;
        cell.title = value === undefined ? name : valueTitle(name, value);
        return cell;
      })
    );
  }

  dispose(): void {
    document.removeEventListener('click', this._onDocumentClick);
    settings.changed.disconnect(this._onSettings, this);
  }

  private _setOpen(open: boolean): void {
    this._menu.hidden = !open;
    this._toggle.setAttribute('aria-expanded', String(open));
    if (open) {
      this._renderMenu();
    }
  }

  private _store(): void {
    void settings.set('valueColumns', [...this._columns]);
  }

  private _onSettings(): void {
    const next = settings.current.valueColumns.slice(0, MAX_COLUMNS);
    if (JSON.stringify(next) === JSON.stringify(this._columns)) {
      return;
    }
    this._columns = next;
    this._renderHeader();
    this._renderMenu();
    this._onChange();
  }

  private _renderMenu(): void {
    if (this._menu.hidden) {
      return;
    }
    this._menu.replaceChildren();
    if (!this._names.length) {
      this._menu.appendChild(
        h(
          'div',
          'jp-TaskRun-valueChooserEmpty',
          trans.__('No loaded task recorded a value yet.')
        )
      );
      return;
    }
    const full = this._columns.length >= MAX_COLUMNS;
    for (const name of this._names) {
      const label = h('label', 'jp-TaskRun-valueChoice');
      const box = h('input');
      box.type = 'checkbox';
      box.value = name;
      box.checked = this._columns.includes(name);
      box.disabled = full && !box.checked;
      box.addEventListener('change', () => this.setColumn(name, box.checked));
      label.append(box, h('span', '', name));
      this._menu.appendChild(label);
    }
  }

  private _renderHeader(): void {
    const sort = parseSort(this._model.filters.sort);
    const key = JSON.stringify([this._columns, sort]);
    if (key === this._headerKey) {
      return;
    }
    this._headerKey = key;
    this._header.hidden = this._columns.length === 0;
    this._header.replaceChildren(
      ...this._columns.map(name => {
        const cell = h('button', 'jp-TaskRun-valueHeaderCell');
        cell.dataset.name = name;
        const dir =
          sort?.name === name
            ? sort.descending
              ? 'descending'
              : 'ascending'
            : 'none';
        cell.setAttribute('aria-sort', dir);
        // the arrow first: a long name is cut at the end, not the arrow
        const arrow = { ascending: '▲ ', descending: '▼ ', none: '' }[dir];
        cell.textContent = `${arrow}${name}`;
        cell.title = trans.__('Sort by %1 (click again to reverse)', name);
        cell.addEventListener('click', () => this.cycleSort(name));
        return cell;
      })
    );
  }

  private _model: TaskListModel;
  private _onChange: () => void;
  private _columns: string[];
  private _names: string[] = [];
  private _namesKey = '';
  private _headerKey = '';
  private _toggle: HTMLButtonElement;
  private _menu: HTMLElement;
  private _header: HTMLElement;
  private _onDocumentClick: () => void;
}

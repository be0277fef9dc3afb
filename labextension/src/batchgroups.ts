/**
 * The sidebar's batch groups (panel.ts): the tasks of one batch submission
 * (the same `batch_id`, POST …/tasks/batch) show as one row that expands to
 * the tasks themselves.
 *
 * Guarantees: a group takes the place of its first task in the list's order,
 * so the chosen sort holds; a batch with a single task in the list is a plain
 * row; the counts by status are those of the loaded tasks (the latest tries:
 * the server leaves superseded ones out); a group stays expanded or collapsed
 * across re-renders; a group row's DOM is written only where it changed, as
 * the task rows are (the list re-renders every second).
 */
import { caretDownIcon, caretRightIcon } from '@jupyterlab/ui-components';

import { trans } from './i18n';
import { ITask, TASK_STATUSES, TaskStatus } from './models';
import { h, iconNode, setText, STATUS_LABELS, statusIcon } from './utils';

export interface IBatchGroup {
  id: string;
  /** in the list's order */
  tasks: ITask[];
}

/** One row of the list: a task (maybe inside an expanded group) or a group. */
export type ListItem =
  | { task: ITask; group?: undefined; inBatch: boolean }
  | { group: IBatchGroup; task?: undefined };

interface IGroupRow {
  node: HTMLLIElement;
  caret: HTMLElement;
  icon: HTMLElement;
  name: HTMLElement;
  size: HTMLElement;
  counts: HTMLElement;
  key: string;
}

/** The group's overall status: what most needs attention first. */
const PRECEDENCE: TaskStatus[] = [
  'running',
  'queued',
  'waiting',
  'failed',
  'timed_out',
  'cancelled',
  'completed'
];

export class BatchGroups {
  constructor(onToggle: () => void) {
    this._onToggle = onToggle;
  }

  /** The list's rows: each batch of two or more tasks folded into its group. */
  items(tasks: readonly ITask[]): ListItem[] {
    const members = new Map<string, ITask[]>();
    for (const task of tasks) {
      if (task.batch_id) {
        const list = members.get(task.batch_id);
        if (list) {
          list.push(task);
        } else {
          members.set(task.batch_id, [task]);
        }
      }
    }
    const out: ListItem[] = [];
    const placed = new Set<string>();
    for (const task of tasks) {
      const id = task.batch_id;
      const batch = id ? members.get(id) : undefined;
      if (!id || !batch || batch.length < 2) {
        out.push({ task, inBatch: false });
        continue;
      }
      if (placed.has(id)) {
        continue;
      }
      placed.add(id);
      out.push({ group: { id, tasks: batch } });
      if (this._expanded.has(id)) {
        out.push(...batch.map(t => ({ task: t, inBatch: true })));
      }
    }
    return out;
  }

  /** The group's row, created or brought up to date (marks it as shown). */
  render(group: IBatchGroup): HTMLLIElement {
    this._seen.add(group.id);
    let row = this._rows.get(group.id);
    if (!row) {
      row = this._create(group.id);
      this._rows.set(group.id, row);
    }
    const expanded = this._expanded.has(group.id);
    const counts = new Map<TaskStatus, number>();
    for (const task of group.tasks) {
      counts.set(task.status, (counts.get(task.status) ?? 0) + 1);
    }
    const status = PRECEDENCE.find(s => counts.has(s)) ?? group.tasks[0].status;
    const first = [...group.tasks].sort((a, b) =>
      a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0
    )[0];
    const parts = TASK_STATUSES.filter(s => counts.has(s)).map(
      s => `${s}:${counts.get(s)}`
    );
    const key = [expanded, status, first.key, first.name, ...parts].join('|');
    if (key === row.key) {
      return row.node;
    }
    row.key = key;
    const node = row.node;
    node.dataset.status = status;
    for (const s of TASK_STATUSES) {
      node.classList.toggle(`jp-mod-${s}`, s === status);
    }
    node.classList.toggle('jp-mod-expanded', expanded);
    node.setAttribute('aria-expanded', String(expanded));
    row.caret.replaceChildren(
      iconNode(expanded ? caretDownIcon : caretRightIcon)
    );
    row.icon.replaceChildren(
      iconNode(statusIcon(status), '', STATUS_LABELS[status])
    );
    setText(row.name, first.key || first.name || first.id);
    setText(row.size, trans.__('batch of %1', group.tasks.length));
    row.counts.replaceChildren(
      ...TASK_STATUSES.filter(s => counts.has(s)).map(s => {
        const chip = h(
          'span',
          `jp-TaskRun-batchCount jp-mod-${s}`,
          trans.__('%1 %2', counts.get(s) ?? 0, STATUS_LABELS[s].toLowerCase())
        );
        chip.dataset.status = s;
        return chip;
      })
    );
    node.title = expanded
      ? trans.__('Collapse this batch')
      : trans.__('Show the %1 tasks of this batch', group.tasks.length);
    return node;
  }

  /** Drop the rows of groups not shown by the last render. */
  prune(): void {
    for (const [id, row] of this._rows) {
      if (!this._seen.has(id)) {
        row.node.remove();
        this._rows.delete(id);
      }
    }
    this._seen.clear();
  }

  private _create(id: string): IGroupRow {
    const node = h('li', 'jp-TaskRun-row jp-TaskRun-batchRow');
    node.dataset.batchId = id;
    node.tabIndex = 0;
    node.setAttribute('role', 'listitem');
    const caret = h('span', 'jp-TaskRun-batchCaret');
    const icon = h('span', 'jp-TaskRun-statusIcon');
    const main = h('div', 'jp-TaskRun-rowMain');
    const top = h('div', 'jp-TaskRun-rowTop');
    const name = h('span', 'jp-TaskRun-name');
    const size = h('span', 'jp-TaskRun-batchSize');
    top.append(name, size);
    const counts = h('div', 'jp-TaskRun-rowMeta jp-TaskRun-batchCounts');
    main.append(top, counts);
    node.append(caret, icon, main);
    const toggle = () => {
      if (!this._expanded.delete(id)) {
        this._expanded.add(id);
      }
      this._onToggle();
    };
    node.addEventListener('click', toggle);
    node.addEventListener('keydown', event => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        toggle();
      }
    });
    return { node, caret, icon, name, size, counts, key: '' };
  }

  private _onToggle: () => void;
  private _expanded = new Set<string>();
  private _rows = new Map<string, IGroupRow>();
  private _seen = new Set<string>();
}

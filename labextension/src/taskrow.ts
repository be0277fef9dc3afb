/**
 * One row of the sidebar's task list (panel.ts): its nodes, and their update
 * from a task record. Which optional parts show (duration, age, end time,
 * owner, tags, progress) is the `columns` setting (settings.ts).
 *
 * Guarantees: an update writes the DOM only where the text or state changed
 * (the list re-renders every second), and every text is translated.
 */
import { stopIcon } from '@jupyterlab/ui-components';

import { formatDuration } from './format';
import { trans } from './i18n';
import { ITask, isTerminal, TASK_STATUSES, TaskStatus } from './models';
import type { ListColumn } from './settings';
import {
  formatAge,
  formatTime,
  h,
  iconNode,
  parseTime,
  progressFraction,
  setText,
  STATUS_LABELS,
  statusIcon,
  taskDuration
} from './utils';

export interface IRow {
  node: HTMLLIElement;
  icon: HTMLElement;
  iconStatus: TaskStatus | null;
  name: HTMLElement;
  duration: HTMLElement;
  owner: HTMLElement;
  age: HTMLElement;
  ended: HTMLElement;
  tags: HTMLElement;
  progress: HTMLElement;
  bar: HTMLElement;
  progressLabel: HTMLElement;
  cancel: HTMLButtonElement;
  values: HTMLElement;
}

export interface IRowHandlers {
  cancel: (id: string) => void;
  /** a click (`toggle`: Ctrl/Cmd held, for a multi-selection) */
  click: (id: string, toggle: boolean) => void;
  /** a right click (before the context menu opens) */
  context: (id: string) => void;
}

/** What a row shows besides its task. */
export interface IRowState {
  selected: boolean;
  cancelling: boolean;
  offline: boolean;
  columns: readonly ListColumn[];
}

export function createRow(id: string, on: IRowHandlers): IRow {
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
  const ended = h('span', 'jp-TaskRun-ended');
  const tags = h('span', 'jp-TaskRun-tags');
  meta.append(age, ended, owner, tags);
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
    on.cancel(id);
  });
  node.append(icon, main, cancel);
  node.addEventListener('click', event =>
    on.click(id, event.ctrlKey || event.metaKey)
  );
  node.addEventListener('contextmenu', () => on.context(id));
  node.addEventListener('keydown', event => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      on.click(id, false);
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
    ended,
    tags,
    progress,
    bar,
    progressLabel,
    cancel,
    values
  };
}

export function updateRow(
  row: IRow,
  task: ITask,
  now: number,
  state: IRowState
): void {
  const node = row.node;
  const shows = (c: ListColumn) => state.columns.includes(c);
  if (node.dataset.status !== task.status) {
    node.dataset.status = task.status;
    for (const status of TASK_STATUSES) {
      node.classList.toggle(`jp-mod-${status}`, status === task.status);
    }
  }
  node.classList.toggle('jp-mod-selected', state.selected);
  node.setAttribute('aria-selected', String(state.selected));
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
  row.duration.hidden = !shows('duration');
  setText(row.owner, shortOwner(task.owner));
  row.owner.title = task.owner ? trans.__('Owner: %1', task.owner) : '';
  row.owner.hidden = !task.owner || !shows('owner');
  setText(row.age, formatAge(task.created_at, now));
  row.age.hidden = !shows('age');
  setText(
    row.ended,
    task.finished_at
      ? trans.__('ended %1', shortTime(task.finished_at, now))
      : ''
  );
  row.ended.hidden = !task.finished_at || !shows('ended');
  setText(
    row.tags,
    task.tags.length ? task.tags.map(t => `#${t}`).join(' ') : ''
  );
  row.tags.hidden = task.tags.length === 0 || !shows('tags');

  const fraction = progressFraction(task);
  const active = !isTerminal(task.status);
  const showProgress =
    shows('progress') && (task.status === 'running' || fraction !== null);
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
  row.cancel.disabled = state.offline || state.cancelling;
  row.cancel.title = state.offline
    ? trans.__('The server is not answering; cancel once it is back')
    : state.cancelling
      ? trans.__('Cancellation requested…')
      : trans.__('Cancel this task');

  const title = [
    `${task.name} (${task.id})`,
    trans.__('Status: %1', STATUS_LABELS[task.status]),
    task.owner ? trans.__('Owner: %1', task.owner) : '',
    trans.__('Created: %1', formatTime(task.created_at)),
    task.started_at ? trans.__('Started: %1', formatTime(task.started_at)) : '',
    task.finished_at
      ? trans.__('Finished: %1', formatTime(task.finished_at))
      : '',
    task.error?.reason ? trans.__('Reason: %1', task.error.reason) : ''
  ]
    .filter(Boolean)
    .join('\n');
  if (node.title !== title) {
    node.title = title;
  }
}

/** An end time, short: the time of day today, else the date. */
export function shortTime(time: string, now: number): string {
  const ms = parseTime(time);
  if (ms === null) {
    return '';
  }
  const when = new Date(ms);
  return when.toDateString() === new Date(now).toDateString()
    ? when.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : when.toLocaleDateString();
}

/** Anonymous Jupyter users are 32-hex ids: show the start only. */
export function shortOwner(owner: string): string {
  return /^[0-9a-f]{32}$/i.test(owner) ? owner.slice(0, 8) : owner;
}

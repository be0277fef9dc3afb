/**
 * The history list of a schedule card: one item per run (its status, the
 * cron time it ran for, or "run now", and its duration; a click or Enter
 * opens the task), then a note (loading, none yet, only the latest shown,
 * or why it could not load).
 */
import { formatDuration } from './format';
import { trans } from './i18n';
import type { ISchedule, ITask } from './models';
import { formatRunTime } from './scheduleform';
import type { IScheduleHistory } from './schedulemodel';
import {
  formatTime,
  h,
  iconNode,
  STATUS_LABELS,
  statusIcon,
  taskDuration
} from './utils';

/** Changes when the list must be rebuilt: a run changed, or a running one's duration ticked. */
export function historyKey(
  history: IScheduleHistory | null,
  now: number
): string {
  const tasks = history?.tasks ?? [];
  return JSON.stringify([
    history?.loading,
    history?.error,
    history?.hasMore,
    tasks.map(t => [t.id, t.status, t.last_event_id]),
    tasks.some(t => t.status === 'running') ? Math.floor(now / 1000) : 0
  ]);
}

/** The items of the list. */
export function historyItems(
  s: ISchedule,
  history: IScheduleHistory | null,
  now: number,
  openTask: (id: string) => void
): HTMLElement[] {
  const tasks = history?.tasks ?? [];
  const items = tasks.map(task => runItem(task, s, now, openTask));
  const note = (text: string, cls = '') =>
    h('li', `jp-TaskRun-schedHistoryNote ${cls}`.trim(), text);
  if (history?.error) {
    items.push(
      note(
        trans.__('Could not load the runs: %1', history.error),
        'jp-mod-error'
      )
    );
  } else if (!tasks.length) {
    items.push(
      note(history?.loading ? trans.__('Loading…') : trans.__('No runs yet.'))
    );
  } else if (history?.hasMore) {
    items.push(
      note(
        trans.__(
          'The latest %1 runs; the Tasks view lists them all.',
          tasks.length
        )
      )
    );
  }
  return items;
}

function runItem(
  task: ITask,
  s: ISchedule,
  now: number,
  openTask: (id: string) => void
): HTMLElement {
  const item = h('li', `jp-TaskRun-schedRun jp-mod-${task.status}`);
  item.dataset.taskId = task.id;
  item.dataset.status = task.status;
  item.tabIndex = 0;
  item.appendChild(
    iconNode(statusIcon(task.status), 'jp-TaskRun-schedRunIcon')
  );
  const when = formatRunTime(task.scheduled_for ?? task.created_at, s.timezone);
  item.appendChild(h('span', 'jp-TaskRun-schedRunTime', when));
  if (!task.scheduled_for) {
    item.appendChild(
      h('span', 'jp-TaskRun-schedRunManual', trans.__('run now'))
    );
  }
  const duration = taskDuration(task, now);
  item.appendChild(
    h(
      'span',
      'jp-TaskRun-schedRunDuration',
      duration === null ? STATUS_LABELS[task.status] : formatDuration(duration)
    )
  );
  item.title = [
    `${task.name} (${task.id})`,
    trans.__('Status: %1', STATUS_LABELS[task.status]),
    task.scheduled_for
      ? trans.__('Scheduled for: %1', formatTime(task.scheduled_for))
      : trans.__('Started by “Run now”'),
    trans.__('Created: %1', formatTime(task.created_at))
  ].join('\n');
  item.addEventListener('click', () => openTask(task.id));
  item.addEventListener('keydown', event => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      openTask(task.id);
    }
  });
  return item;
}

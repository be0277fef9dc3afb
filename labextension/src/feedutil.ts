/**
 * Small helpers of the task list model: filters, ordering, feed payloads,
 * queue positions and counts, and a timer that coalesces bursts of changes.
 */
import type {
  ICounts,
  IProgressChangeData,
  ITask,
  ITaskProgress
} from './models';
import { isTerminal, TaskStatus } from './models';
import { TaskAPI } from './api';
import { parseTime } from './utils';

export interface ITaskFilters {
  status: TaskStatus | '';
  tag: string;
  search: string;
  /** '' (newest first), a field (listcontrols.ts), `values.NAME` or `-values.NAME` (the server sorts) */
  sort: string;
  /** ISO times: created at or after / before ('' for no bound; the server filters) */
  createdAfter: string;
  createdBefore: string;
}

/** No filter, newest first. */
export const NO_FILTERS: ITaskFilters = {
  status: '',
  tag: '',
  search: '',
  sort: '',
  createdAfter: '',
  createdBefore: ''
};

export interface IServerQuery {
  status: TaskStatus | '';
  tag: string;
  q: string;
  sort: string;
  created_after: string;
  created_before: string;
}

/**
 * What the server filters: status, and the tag once it is a complete tag
 * seen before. The name search is a substring match done here (the REST
 * `?name=` is a prefix filter); `q` is sent too, for a server that searches.
 */
export function serverQuery(
  f: ITaskFilters,
  seenTags: Set<string>
): IServerQuery {
  const tag = f.tag.trim();
  return {
    status: f.status,
    tag: tag && seenTags.has(tag) ? tag : '',
    q: f.search.trim(),
    sort: f.sort,
    created_after: f.createdAfter,
    created_before: f.createdBefore
  };
}

export function matchesServer(task: ITask, q: IServerQuery): boolean {
  if (task.retried_as) {
    return false; // a superseded try: the server lists the latest (attempts=latest)
  }
  if (q.status && task.status !== q.status) {
    return false;
  }
  const created = parseTime(task.created_at) ?? 0;
  if (
    (q.created_after && created < (parseTime(q.created_after) ?? 0)) ||
    (q.created_before && created >= (parseTime(q.created_before) ?? 0))
  ) {
    return false;
  }
  return !q.tag || task.tags.includes(q.tag);
}

/** The filters as typed: a tag prefix, a name substring (or an id prefix). */
export function matchesLocal(task: ITask, f: ITaskFilters): boolean {
  if (f.status && task.status !== f.status) {
    return false;
  }
  const tag = f.tag.trim().toLowerCase();
  if (tag && !task.tags.some(t => t.toLowerCase().startsWith(tag))) {
    return false;
  }
  const search = f.search.trim().toLowerCase();
  return (
    !search ||
    (task.name || '').toLowerCase().includes(search) ||
    task.id.startsWith(search)
  );
}

/** id → queue position of every queued task (the change feed carries none). */
export async function fetchQueuePositions(): Promise<
  Map<string, number | null>
> {
  const page = await TaskAPI.list({ status: 'queued', limit: 500 });
  return new Map(page.tasks.map(t => [t.id, t.queue_position ?? null]));
}

/** Copies of the queued tasks whose queue position moved. */
export function movedInQueue(
  tasks: Map<string, ITask>,
  positions: Map<string, number | null>
): ITask[] {
  const moved: ITask[] = [];
  for (const task of tasks.values()) {
    const position = positions.get(task.id);
    if (
      task.status === 'queued' &&
      position !== undefined &&
      task.queue_position !== position
    ) {
      moved.push({ ...task, queue_position: position });
    }
  }
  return moved;
}

/** The server's running/queued counts. */
export async function fetchCounts(): Promise<ICounts> {
  const status = await TaskAPI.status();
  return {
    running: Number(status.running) || 0,
    queued: Number(status.queued) || 0
  };
}

/** The progress of a feed entry: `{progress, id, owner}` (or a bare progress dict). */
/** Whether a reloaded task differs from the copy the views last saw. */
export function changedSince(old: ITask | null, task: ITask): boolean {
  return (
    !old ||
    old.status !== task.status ||
    old.last_event_id !== task.last_event_id ||
    old.queue_position !== task.queue_position
  );
}

/** What a `progress` or `values` change updates on a listed task (null: nothing usable). */
export function patchOf(
  kind: 'progress' | 'values',
  data: unknown
): Pick<ITask, 'progress'> | Pick<ITask, 'values'> | null {
  if (kind === 'progress') {
    const progress = progressOf(data);
    return progress ? { progress } : null;
  }
  const values = (data as { values?: unknown } | null)?.values;
  return values && typeof values === 'object'
    ? { values: values as ITask['values'] }
    : null;
}

export function progressOf(data: unknown): ITaskProgress | null {
  if (!data || typeof data !== 'object') {
    return null;
  }
  const d = data as Partial<IProgressChangeData> & Partial<ITaskProgress>;
  const p = (
    d.progress && typeof d.progress === 'object' ? d.progress : d
  ) as Partial<ITaskProgress>;
  return typeof p.value === 'number'
    ? {
        value: p.value,
        total: typeof p.total === 'number' ? p.total : null,
        message: p.message ?? ''
      }
    : null;
}

/** Is `a` at least as recent as `b` (by last event id)? */
export function isNewer(a: ITask, b: ITask): boolean {
  if (
    typeof a.last_event_id === 'number' &&
    typeof b.last_event_id === 'number'
  ) {
    if (a.last_event_id !== b.last_event_id) {
      return a.last_event_id > b.last_event_id;
    }
  }
  // same event id: only a move to a final state counts as news
  return a.status !== b.status
    ? isTerminal(a.status) || b.status === 'queued'
    : true;
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

/** Would `task` appear among the pages loaded so far (newest first)? */
export function inLoadedRange(
  task: ITask,
  order: string[],
  tasks: Map<string, ITask>
): boolean {
  if (order.length === 0) {
    return true;
  }
  const last = tasks.get(order[order.length - 1]);
  const created = parseTime(task.created_at) ?? 0;
  return !last || created >= (parseTime(last.created_at) ?? 0);
}

/** Where `task` goes in the newest-first order. */
export function insertIndex(
  task: ITask,
  order: string[],
  tasks: Map<string, ITask>
): number {
  const created = parseTime(task.created_at) ?? Date.now();
  let index = 0;
  while (index < order.length) {
    const other = tasks.get(order[index]);
    if (!other || (parseTime(other.created_at) ?? 0) <= created) {
      break;
    }
    index += 1;
  }
  return index;
}

/**
 * Runs `fn` once, `delay` ms after the first of a burst of `schedule()`
 * calls; a call while `fn` runs schedules the next run.
 */
export class Later {
  constructor(fn: () => void, delay: number) {
    this._fn = fn;
    this._delay = delay;
  }

  schedule(): void {
    if (this._timer === null && !this._disposed) {
      this._timer = window.setTimeout(() => {
        this._timer = null;
        this._fn();
      }, this._delay);
    }
  }

  dispose(): void {
    this._disposed = true;
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _fn: () => void;
  private _delay: number;
  private _timer: number | null = null;
  private _disposed = false;
}
